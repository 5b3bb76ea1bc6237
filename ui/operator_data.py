"""The operator page's facts, free of Streamlit: the setting that turns the page on, each worker's
status, PID and memory, and the last minutes of throughput and latency from TorchServe's metrics
port (readings a few seconds apart) or from a Prometheus server (TS_PROMETHEUS_URL).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from service.client.api import TorchServeClient
from ui.metrics_query import PrometheusAPI, Sample, buckets, difference, parse_text, quantile, total

# The UI shows the operator page (workers, scaling through the management API) only when started
# with this set to 1: `make ui OPERATOR=1`, `scripts/serve.py ui --operator`. Off by default.
OPERATOR_ENV = "TS_UI_OPERATOR"
# Where a Prometheus server that scrapes this TorchServe answers, if one does (else the page reads
# the metrics port itself).
PROMETHEUS_ENV = "TS_PROMETHEUS_URL"
HISTORY_SECONDS = 300  # the charts' window
LATENCY_STAGE = "forward"


def operator_enabled(env: Mapping[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get(OPERATOR_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def worker_rows(described: list[dict], samples: list[Sample]) -> list[dict[str, object]]:
    """One row per worker of every version: id, status, PID, memory (TorchServe's figure when it
    has one, else the RSS the worker itself reports in handler_worker_rss_bytes), threads in use."""
    rows = []
    for version in described:
        for worker in version.get("workers", []):
            wid = str(worker.get("id"))
            rss = total(samples, "handler_worker_rss_bytes", worker=wid)
            memory = worker.get("memoryUsage") or rss
            threads = total(samples, "handler_worker_threads", worker=wid)
            rows.append({
                "version": version.get("modelVersion"),
                "worker": wid,
                "status": worker.get("status"),
                "pid": worker.get("pid"),
                "memory MiB": round(memory / 2**20, 1) if memory else None,
                "threads": int(threads) if threads else None,
            })
    return rows


def scale(client: TorchServeClient, model: str, workers: int) -> tuple[bool, str]:
    """Set the model's workers (min = max = workers) and wait for them; (ok, TorchServe's message)."""
    response = client.scale_workers(model, workers, workers)
    try:
        message = response.json().get("status") or response.text
    except ValueError:
        message = response.text
    return response.ok, message


@dataclass
class Reading:
    at: float
    samples: list[Sample]


@dataclass
class MetricsHistory:
    """Readings of the metrics port over the last minutes; each pair of neighbours gives a point."""

    model: str
    readings: list[Reading] = field(default_factory=list)

    def add(self, text: str, at: float | None = None) -> None:
        now = time.time() if at is None else at
        self.readings = [r for r in self.readings if r.at >= now - HISTORY_SECONDS] + [Reading(now, parse_text(text))]

    def latest(self) -> list[Sample]:
        return self.readings[-1].samples if self.readings else []

    def points(self) -> list[dict[str, float | None]]:
        """Per interval: images/s, and p50/p95 of the per-image forward time (ms) and the decode time."""
        points = []
        for older, newer in pairwise(self.readings):
            seconds = newer.at - older.at
            if seconds <= 0:
                continue
            point: dict[str, float | None] = {"time": newer.at}
            images = total(newer.samples, "handler_images_total", ModelName=self.model)
            before = total(older.samples, "handler_images_total", ModelName=self.model)
            point["images/s"] = (images - before if images >= before else images) / seconds
            for stage in (LATENCY_STAGE, "decode"):
                gained = difference(*(buckets(r.samples, "handler_stage_seconds", ModelName=self.model, stage=stage)
                                      for r in (newer, older)))
                for q in (0.5, 0.95):
                    value = quantile(q, gained)
                    point[f"{stage} p{int(q * 100)} ms"] = None if value is None else value * 1000
            points.append(point)
        return points


def refusals(samples: list[Sample], model: str) -> dict[str, float]:
    """Refused requests or images by error type since the server started."""
    found: dict[str, float] = {}
    for s in samples:
        if s.name == "handler_refused_total" and s.labels.get("ModelName") == model:
            found[s.labels["error"]] = found.get(s.labels["error"], 0.0) + s.value
    return dict(sorted(found.items()))


def prometheus_points(api: PrometheusAPI, model: str, seconds: float = HISTORY_SECONDS) -> list[dict]:
    """The same chart from a Prometheus server: images/s and per-image forward p50/p95 (ms)."""
    selector = f'ModelName="{model}"'
    queries = {
        "images/s": f"sum(rate(handler_images_total{{{selector}}}[1m]))",
        **{
            f"{LATENCY_STAGE} p{int(q * 100)} ms": f"1000 * histogram_quantile({q}, sum by (le) "
            f'(rate(handler_stage_seconds_bucket{{{selector},stage="{LATENCY_STAGE}"}}[1m])))'
            for q in (0.5, 0.95)
        },
    }
    by_time: dict[float, dict] = {}
    for column, expr in queries.items():
        for series in api.query_range(expr, seconds, step=max(5.0, seconds / 120)):
            for at, value in series["values"]:
                by_time.setdefault(float(at), {"time": float(at)})[column] = float(value)
    return [by_time[t] for t in sorted(by_time)]
