"""Reading metrics: TorchServe's Prometheus text (its metrics port) and a Prometheus server's HTTP API.

The operator page reads the metrics port directly (two readings a few seconds apart give rates and
quantiles) or a Prometheus server when one is configured (TS_PROMETHEUS_URL); the tests ask a real
Prometheus what it scraped. Quantiles from buckets interpolate as PromQL's histogram_quantile does.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import requests

# name{label="value",...} value   (TorchServe writes a trailing comma inside the braces)
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_text(text: str) -> list[Sample]:
    """Prometheus text exposition format (what TorchServe's /metrics answers) to samples."""
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            name, labels, value = match.groups()
            samples.append(Sample(name, dict(LABEL.findall(labels or "")), float(value)))
    return samples


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of every sample of `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def buckets(samples: Iterable[Sample], histogram: str, **labels: str) -> dict[float, float]:
    """A histogram's cumulative buckets (le -> count), summed over every other label."""
    found: dict[float, float] = {}
    for s in samples:
        if s.name == f"{histogram}_bucket" and labels.items() <= s.labels.items():
            le = float(s.labels["le"])
            found[le] = found.get(le, 0.0) + s.value
    return dict(sorted(found.items()))


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """The q-quantile of cumulative buckets, interpolated linearly inside a bucket as PromQL's
    histogram_quantile does; the highest finite bound if it falls in +Inf; None without data."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def difference(newer: dict[float, float], older: dict[float, float]) -> dict[float, float]:
    """Bucket counts gained between two readings (a reset counter starts again from its new value)."""
    gained = {le: count - older.get(le, 0.0) for le, count in newer.items()}
    return newer if any(v < 0 for v in gained.values()) else gained


class PrometheusAPI:
    """A Prometheus server's HTTP API (/api/v1): instant and range queries."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, **params: object) -> list[dict]:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=self.timeout)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {params}: {body.get('error')}")
        return body["data"]["result"]

    def query(self, expr: str) -> list[dict]:
        """Instant vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self._get("query", query=expr)

    def value(self, expr: str) -> float | None:
        """The one number an expression gives (None for an empty result)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def query_range(self, expr: str, seconds: float, step: float) -> list[dict]:
        end = time.time()
        return self._get("query_range", query=expr, start=end - seconds, end=end, step=step)

    def wait_for(self, expr: str, accept: Callable[[float | None], bool], timeout: float = 30) -> float | None:
        """Poll `expr` until `accept(value)`; the last value either way (scrapes come every interval)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(expr)
            if accept(value):
                return value
            time.sleep(0.5)
        return value
