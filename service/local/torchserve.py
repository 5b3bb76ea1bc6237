"""One TorchServe server's lifecycle: run directory, rendered config, process group, readiness, warm-up.

`make run`, `make serve`, the tests, the soak and the benchmark all start servers through
TorchServe below; each gets its own run directory (config.properties, key_file.json, logs/,
PID files), so several servers can run at once on free ports.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from service.client.api import Endpoints, TorchServeClient, ready_workers
from service.names import CONFIG, DOORS_FILE_NAME, KEY_FILE_NAME, LOG_CONFIG, METRICS_CONFIG, MODEL_STORE, RUN_DIR
from service.photos import warm_up_jpeg
from service.processes import PID_FILE, Started, read_pid, running_pid, stop_group, wait_until, write_pid
from service.properties import read_properties, render_config

VENV_BIN = Path(sys.executable).parent
# torchserve's launcher keeps its own PID file in $TMPDIR (the run directory here) and refuses
# to start while the PID in it names any live process, even an unrelated one that reused it.
TORCHSERVE_PID_FILE = ".model_server.pid"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (held open together while chosen, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def torchserve_endpoints(run_dir: Path) -> Endpoints | None:
    """TorchServe's own addresses (behind the doors, if it has any), None if it has no config yet."""
    config = Path(run_dir) / "config.properties"
    if not config.is_file():
        return None
    props = read_properties(config)
    return Endpoints(props["inference_address"], props["management_address"], props["metrics_address"])


def server_endpoints(run_dir: Path) -> Endpoints | None:
    """Where a client reaches the server whose run directory this is: the doors' public addresses
    (doors.json, written by service/local/fronted.py) or, for a TorchServe without doors, its own."""
    doors = Path(run_dir) / DOORS_FILE_NAME
    if doors.is_file():
        public = {door: "http://" + address.replace("0.0.0.0:", "127.0.0.1:")
                  for door, address in json.loads(doors.read_text()).items()}
        return Endpoints(public["inference"], public["management"], public["metrics"])
    return torchserve_endpoints(run_dir)


def client_for(run_dir: Path, timeout: float = 60) -> TorchServeClient:
    """A client of the server that runs (or ran) from `run_dir`: its addresses (the defaults if it
    never started) and its key file."""
    endpoints = server_endpoints(run_dir) or Endpoints()
    return TorchServeClient(endpoints, key_file=Path(run_dir) / KEY_FILE_NAME, timeout=timeout)


def models_ready(client: TorchServeClient, name: str) -> bool:
    """Every version of the model has the workers it wants READY."""
    return all(ready >= wanted for ready, wanted in map(ready_workers, client.describe_model(name).json()))


def store_only_urls(model_store: Path) -> str:
    """allowed_urls (as written in config.properties) matching only .mar files directly in this store: a
    registration by URL can then name nothing but a file already there, which TorchServe refuses to fetch
    again; registrations by bare name load from the store (service/versions)."""
    return ("file://" + re.escape(str(Path(model_store).resolve())) + r"/[^/]+\.mar").replace("\\", "\\\\")


class TorchServe(Started):
    """One TorchServe server: its run directory, config, process group and client."""

    def __init__(
        self,
        run_dir: Path = RUN_DIR,
        model_store: Path = MODEL_STORE,
        config: Path = CONFIG,
        overrides: dict[str, str] | None = None,
        log_config: Path | None = LOG_CONFIG,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.model_store = Path(model_store).resolve()
        self.base_config = Path(config)
        # Paths in config.properties are the checkout's; the server runs in run_dir, so make them absolute.
        self.overrides = {
            "model_store": str(self.model_store),
            "allowed_urls": store_only_urls(self.model_store),
            "metrics_config": str(METRICS_CONFIG),
            **(overrides or {}),
        }
        self.log_config = log_config  # None: TorchServe's built-in logging
        self.process: subprocess.Popen | None = None

    @classmethod
    def on_free_ports(cls, run_dir: Path, model_store: Path, ports: list[int] | None = None,
                      **overrides: str) -> TorchServe:
        """A server on five free loopback ports (or these `ports`), config keys as `overrides`."""
        inference, management, metrics, grpc_inference, grpc_management = ports or free_ports(5)
        return cls(
            run_dir,
            model_store,
            overrides={
                "inference_address": f"http://127.0.0.1:{inference}",
                "management_address": f"http://127.0.0.1:{management}",
                "metrics_address": f"http://127.0.0.1:{metrics}",
                "grpc_inference_port": str(grpc_inference),
                "grpc_management_port": str(grpc_management),
                "initial_worker_port": str(20000 + inference % 20000),
                **overrides,
            },
        )

    @property
    def config_file(self) -> Path:
        return self.run_dir / "config.properties"

    @property
    def key_file(self) -> Path:
        return self.run_dir / KEY_FILE_NAME

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def endpoints(self) -> Endpoints:
        endpoints = torchserve_endpoints(self.run_dir)
        if endpoints is None:
            raise FileNotFoundError(f"{self.config_file} does not exist: the server was never started")
        return endpoints

    def client(self, timeout: float = 60) -> TorchServeClient:
        return TorchServeClient(self.endpoints, key_file=self.key_file, timeout=timeout)

    def start(self) -> None:
        if running_pid(self.run_dir):
            raise RuntimeError(f"a server from {self.run_dir} is already running; stop it first (make stop)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.key_file.unlink(missing_ok=True)
        (self.run_dir / TORCHSERVE_PID_FILE).unlink(missing_ok=True)  # left by a killed server
        render_config(self.base_config, self.overrides, self.config_file)
        env = {
            **os.environ,
            "TMPDIR": str(self.run_dir),  # TorchServe's own PID file lives in $TMPDIR
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
        }
        command = [str(VENV_BIN / "torchserve"), "--foreground", "--ncs", "--ts-config", str(self.config_file)]
        if self.log_config:
            command += ["--log-config", str(self.log_config)]
        with open(self.log_dir / "console.log", "ab") as console:
            self.process = subprocess.Popen(
                command,
                cwd=self.run_dir,
                env=env,
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        write_pid(self.run_dir, self.process.pid)

    def wait_ready(self, timeout: float = 180) -> list[str]:
        """Wait until every model in the store has its minimum workers READY; return their names."""

        def ready_models() -> list[str] | None:
            client = self.client(timeout=5)
            models = [m["modelName"] for m in client.list_models().json()["models"]]
            return models if models and all(models_ready(client, name) for name in models) else None

        return wait_until(ready_models, timeout, f"TorchServe; see {self.log_dir}/model_log.log", self.process, 0.5)

    def warm_up(self, models: list[str]) -> dict[str, dict]:
        """One real inference per model; returns each model's self-description from the answer."""
        client = self.client()
        described = {}
        for name in models:
            response = client.predict(name, warm_up_jpeg(), filename="warm-up.jpg")
            if response.status_code != 200:
                raise RuntimeError(f"warm-up inference on {name} failed: {response.status_code} {response.text}")
            described[name] = response.json()["model"]
        return described


    def stop(self, timeout: float = 30) -> None:
        """Stop the whole process group (also when the launcher died and Java lives on) and
        remove both PID files, ours and TorchServe's own, so nothing blocks the next start."""
        record = read_pid(self.run_dir)
        if self.process:
            stop_group(self.process.pid, timeout)
            self.process.wait()
        elif record:
            stop_group(record["pid"], timeout, since=record["created"])
        (self.run_dir / PID_FILE).unlink(missing_ok=True)
        (self.run_dir / TORCHSERVE_PID_FILE).unlink(missing_ok=True)
