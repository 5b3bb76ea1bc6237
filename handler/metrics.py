"""The handler's own Prometheus metrics, sent through TorchServe's metrics API (context.metrics).

TorchServe 0.12 exports a model metric that the metrics YAML (config/metrics.yaml) declares as a
`histogram` as a real Prometheus histogram, but always with the Java client's default buckets
(5 ms to 10 s; the YAML cannot set others), and each observation costs a line on the worker's
stdout that the frontend parses (about 15 us of worker CPU each, measured). Half of this model's
stages (preprocessing a small photo, encoding the answer) take under 5 ms: they would all land in
the first bucket. So the worker keeps its own bucket counts, with buckets chosen for this model,
and once a second adds what changed to counters laid out as a Prometheus histogram
(`<name>_bucket{le=...}` cumulative, `<name>_sum`, `<name>_count`): histogram_quantile() reads
them as it reads any histogram. Counters and gauges ride the same flush. So the cost is a few
dozen stdout lines a second per worker whatever the load, and every series is up to one flush
late. A worker that dies loses what it had not flushed yet (at most one second).

Only names the server's metrics YAML declares get through (TorchServe drops the rest); with a
YAML that declares none of them (TorchServe's own), this module sends nothing at all.
Label values are bounded: model, version, stage, error type, worker, runtime, precision.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from handler.errors import Result

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
# Seconds: from half a millisecond (encoding an answer) to seconds (a 12 MP photo on a busy core).
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Images in one forward pass: batchSize is 8 in config/model-config.yaml.
BATCH_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 12, 16, 32)
# Per request, parse (body to image bytes and options; refused requests too); per image, decode
# (bytes to upright RGB), preprocess (resize, crop, normalise), forward (the batch's pass divided
# by its images), encode (top-k and JSON).
STAGES = ("parse", "decode", "preprocess", "forward", "encode")
# Every handler series carries these labels first (TorchServe adds Hostname after them).
COMMON_LABELS = ("ModelName", "ModelVersion", "Level")


@dataclass(frozen=True)
class Series:
    """One declared metric: its name, its TorchServe type and its own labels after COMMON_LABELS."""

    name: str
    kind: str  # "counter" or "gauge", as in the metrics YAML
    labels: tuple[str, ...] = ()
    unit: str = "count"


@dataclass(frozen=True)
class Histogram:
    """A histogram kept in the worker, sent as the counters <name>_bucket (with le), _sum, _count."""

    name: str
    buckets: tuple[float, ...]
    labels: tuple[str, ...] = ()
    unit: str = "s"

    def series(self) -> list[Series]:
        return [
            Series(f"{self.name}_bucket", "counter", (*self.labels, "le"), self.unit),
            Series(f"{self.name}_sum", "counter", self.labels, self.unit),
            Series(f"{self.name}_count", "counter", self.labels),
        ]


STAGE_SECONDS = Histogram("handler_stage_seconds", SECONDS_BUCKETS, ("stage",))
BATCH_FORWARD_SECONDS = Histogram("handler_batch_forward_seconds", SECONDS_BUCKETS)
BATCH_SIZE = Histogram("handler_batch_size", BATCH_BUCKETS, unit="images")
HISTOGRAMS = (STAGE_SECONDS, BATCH_FORWARD_SECONDS, BATCH_SIZE)
IMAGES = Series("handler_images_total", "counter")
REFUSED = Series("handler_refused_total", "counter", ("error",))
EXPLANATIONS = Series("handler_explanations_total", "counter")
THREADS = Series("handler_worker_threads", "gauge", ("worker",))
RSS = Series("handler_worker_rss_bytes", "gauge", ("worker",), "B")
# Unix time of the worker's last flush: TorchServe keeps a gone worker's gauges at their last value
# forever, so dashboards keep the workers whose heartbeat is recent.
HEARTBEAT = Series("handler_worker_heartbeat_seconds", "gauge", ("worker",), "s")
RUNTIME_INFO = Series("handler_runtime_info", "gauge", ("runtime", "precision"))


def declared_series() -> list[Series]:
    """Every series this module sends: config/metrics.yaml must declare each (a test checks)."""
    counters = [IMAGES, REFUSED, EXPLANATIONS]
    return [s for h in HISTOGRAMS for s in h.series()] + counters + [THREADS, RSS, HEARTBEAT, RUNTIME_INFO]


def le_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"


class Pending:
    """What happened since the last flush. Plain Python (no TorchServe), safe across threads."""

    def __init__(self, active: bool = True) -> None:
        self.active = active  # inactive: record nothing (metrics off)
        self.lock = threading.Lock()
        self.buckets: dict[tuple[Histogram, tuple[str, ...]], list[float]] = {}  # per bucket, +Inf last; sum
        self.counts: dict[tuple[Series, tuple[str, ...]], float] = {}
        self.gauges: dict[tuple[Series, tuple[str, ...]], float] = {}

    def observe(self, histogram: Histogram, labels: tuple[str, ...], value: float, times: int = 1) -> None:
        """`times` observations of `value` (a batch's per-image share is observed once per image)."""
        if not self.active:
            return
        with self.lock:
            row = self.buckets.setdefault((histogram, labels), [0.0] * (len(histogram.buckets) + 2))
            index = next((i for i, b in enumerate(histogram.buckets) if value <= b), len(histogram.buckets))
            row[index] += times
            row[-1] += value * times

    def count(self, series: Series, labels: tuple[str, ...] = (), n: float = 1) -> None:
        if not self.active:
            return
        with self.lock:
            self.counts[(series, labels)] = self.counts.get((series, labels), 0) + n

    def set(self, series: Series, labels: tuple[str, ...], value: float) -> None:
        if not self.active:
            return
        with self.lock:
            self.gauges[(series, labels)] = value

    def drain(self) -> list[tuple[Series, tuple[str, ...], float]]:
        """Everything pending as (series, label values, value), and start again from nothing:
        counter increments (histograms as cumulative buckets) and the gauges' latest values."""
        with self.lock:
            buckets, counts, gauges = self.buckets, self.counts, self.gauges
            self.buckets, self.counts, self.gauges = {}, {}, {}
        samples = []
        for (histogram, labels), row in buckets.items():
            bucket, total, count = histogram.series()
            cumulative = 0.0
            for bound, n in zip((*histogram.buckets, float("inf")), row[:-1], strict=True):
                cumulative += n
                samples.append((bucket, (*labels, le_label(bound)), cumulative))
            samples += [(total, labels, row[-1]), (count, labels, cumulative)]
        samples += [(series, labels, n) for (series, labels), n in counts.items()]
        samples += [(series, labels, value) for (series, labels), value in gauges.items()]
        return samples


def worker_id(argv: list[str] | None = None) -> str:
    """The worker's id as the management API shows it (its socket's port number: --sock-name
    /tmp/.ts.sock.9000 or --port 9000); the PID outside a TorchServe worker."""
    argv = sys.argv if argv is None else argv
    for flag in ("--sock-name", "--port"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1].rsplit(".", 1)[-1]
    return str(os.getpid())


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc/self/statm); 0 where the kernel does not say."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class HandlerMetrics:
    """The handler's metrics for one worker: the one place that knows TorchServe's metrics API.

    The handler reports what happened (stage timings, batch sizes, refusals...); a background
    thread flushes it through context.metrics every FLUSH_SECONDS.
    """

    def __init__(self, metrics, model: str, version: str, worker: str | None = None) -> None:
        self.metrics = metrics  # TorchServe's metrics cache (context.metrics)
        self.common = (model, version, "Model")
        self.worker = worker or worker_id()
        self.enabled = self._declared(metrics)
        self.pending = Pending(active=self.enabled)
        self._thread: threading.Thread | None = None

    @classmethod
    def from_context(cls, context) -> HandlerMetrics:
        manifest = context.manifest.get("model", {})
        return cls(context.metrics, str(manifest.get("modelName")), str(manifest.get("modelVersion")))

    @staticmethod
    def _declared(metrics) -> bool:
        """True if the server's metrics YAML declares this module's series (else TorchServe would
        drop every line: send none)."""
        from ts.metrics.metric_cache_errors import MetricsCacheKeyError
        from ts.metrics.metric_type_enum import MetricTypes

        try:
            for series in declared_series():
                metrics.get_metric(series.name, MetricTypes(series.kind))
        except (MetricsCacheKeyError, AttributeError) as e:
            log.info("handler metrics off: the metrics YAML does not declare them (%s)", e)
            return False
        return True

    def start(self) -> None:
        """Flush in the background from now on (a daemon thread: it never delays the worker's exit)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._flush_forever, name="handler-metrics", daemon=True)
            self._thread.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # a metrics fault must never take the worker down
                log.exception("flushing handler metrics failed")

    @contextmanager
    def stage(self, stage: str, images: int = 1) -> Iterator[None]:
        """Time the block; each of its `images` images is observed with an equal share."""
        started = time.perf_counter()
        yield
        if images > 0:
            self.pending.observe(STAGE_SECONDS, (stage,), (time.perf_counter() - started) / images, images)

    @contextmanager
    def forward(self, images: int, threads: int) -> Iterator[None]:
        """Time one forward pass: per batch, per image (stage forward), batch size, threads used."""
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        self.pending.observe(BATCH_FORWARD_SECONDS, (), elapsed)
        self.pending.observe(STAGE_SECONDS, ("forward",), elapsed / images, images)
        self.pending.observe(BATCH_SIZE, (), images)
        self.pending.set(THREADS, (self.worker,), threads)

    def answered(self, images: int) -> None:
        if images:
            self.pending.count(IMAGES, (), images)

    def refused(self, kind: str) -> None:
        """One request refused; `kind` is RequestError.kind (a class name, never request data)."""
        self.pending.count(REFUSED, (kind,))

    def refused_images(self, results: Sequence[Result]) -> None:
        """The images refused inside a request that was answered (its other images were not)."""
        for result in results:
            if result.error is not None:
                self.refused(result.error.kind)

    def explained(self, images: int = 1) -> None:
        self.pending.count(EXPLANATIONS, (), images)

    def runtime(self, runtime: str, precision: str) -> None:
        self.pending.set(RUNTIME_INFO, (runtime, precision), 1)

    def flush(self) -> int:
        """Send what is pending through context.metrics; return how many lines that took."""
        if not self.enabled:
            return 0
        from ts.metrics.dimension import Dimension
        from ts.metrics.metric_type_enum import MetricTypes

        self.pending.set(RSS, (self.worker,), rss_bytes())
        self.pending.set(HEARTBEAT, (self.worker,), round(time.time(), 3))
        samples = self.pending.drain()
        for series, labels, value in samples:
            names = (*COMMON_LABELS, *series.labels)
            dimensions = [Dimension(n, v) for n, v in zip(names, (*self.common, *labels), strict=True)]
            if series.kind == "counter":
                self.metrics.add_counter(series.name, value, None, dimensions)
            else:
                self.metrics.add_metric(series.name, value, series.unit, None, dimensions, MetricTypes.GAUGE)
        return len(samples)
