"""A Prometheus server as a plain process (Debian's `prometheus` package; no service manager):
its scrape config for TorchServe's metrics port, start, readiness, stop.

The tests run one on a free loopback port against their own TorchServe; deploy/prometheus/
holds the same scrape job for `docker compose up` (tests check both with promtool).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import requests
import yaml

from service.local.torchserve import free_port
from service.processes import Started, stop_group, wait_until
from ui.metrics_query import PrometheusAPI

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# The job name the dashboard's queries and deploy/prometheus/prometheus.yml use.
JOB = "torchserve"


def scrape_config(targets: list[str], interval: str = "15s") -> dict:
    """One job scraping TorchServe's metrics port(s) (host:port) at /metrics."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}],
    }


class Prometheus(Started):
    """One Prometheus server scraping the given targets, its data in `run_dir`."""

    def __init__(self, run_dir: Path, targets: list[str], interval: str = "1s") -> None:
        self.run_dir = Path(run_dir)
        self.targets = targets
        self.interval = interval
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self) -> PrometheusAPI:
        return PrometheusAPI(self.url)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets, self.interval), sort_keys=False))
        command = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.run_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with open(self.run_dir / "prometheus.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200 or None, timeout,
                   f"prometheus; see {self.run_dir}/prometheus.log", self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process.pid, 10)
            self.process.wait()
            self.process = None

