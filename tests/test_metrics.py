"""The handler's metrics without a server: names and labels stable, config/metrics.yaml in step with
handler/metrics.py, histogram buckets cumulative, and every line the worker writes parsed by the
frontend's own pattern (TorchServe 0.12's WorkerLifeCycle.METRIC_PATTERN)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import ts
import yaml
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from handler import metrics as hm
from service.names import METRICS_CONFIG
from ui.metrics_query import buckets, difference, parse_text, quantile, total

TS_DEFAULT_METRICS = Path(ts.__file__).parent / "configs" / "metrics.yaml"
# The frontend's patterns, copied from TorchServe 0.12's jar (WorkerLifeCycle, Metric.parse).
LINE = re.compile(r"^(INFO > )?(\[METRICS])(.*)")
METRIC = re.compile(
    r"\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?\|#hostname:([^,]+),([^,]+)(,(.*))?"
)

# The series dashboards and alerts depend on: renaming one, or changing its labels, breaks them.
# (TorchServe appends Hostname to every one.)
STABLE = {
    "handler_stage_seconds_bucket": ["ModelName", "ModelVersion", "Level", "stage", "le"],
    "handler_stage_seconds_sum": ["ModelName", "ModelVersion", "Level", "stage"],
    "handler_stage_seconds_count": ["ModelName", "ModelVersion", "Level", "stage"],
    "handler_batch_forward_seconds_bucket": ["ModelName", "ModelVersion", "Level", "le"],
    "handler_batch_forward_seconds_sum": ["ModelName", "ModelVersion", "Level"],
    "handler_batch_forward_seconds_count": ["ModelName", "ModelVersion", "Level"],
    "handler_batch_size_bucket": ["ModelName", "ModelVersion", "Level", "le"],
    "handler_batch_size_sum": ["ModelName", "ModelVersion", "Level"],
    "handler_batch_size_count": ["ModelName", "ModelVersion", "Level"],
    "handler_images_total": ["ModelName", "ModelVersion", "Level"],
    "handler_refused_total": ["ModelName", "ModelVersion", "Level", "error"],
    "handler_explanations_total": ["ModelName", "ModelVersion", "Level"],
    "handler_worker_threads": ["ModelName", "ModelVersion", "Level", "worker"],
    "handler_worker_rss_bytes": ["ModelName", "ModelVersion", "Level", "worker"],
    "handler_worker_heartbeat_seconds": ["ModelName", "ModelVersion", "Level", "worker"],
    "handler_runtime_info": ["ModelName", "ModelVersion", "Level", "runtime", "precision"],
}


def declared(path: Path) -> dict[str, dict[str, list[str]]]:
    """kind -> name -> dimensions of a metrics YAML's model_metrics."""
    section = yaml.safe_load(path.read_text())["model_metrics"]
    return {kind: {m["name"]: m["dimensions"] for m in specs} for kind, specs in section.items()}


def test_series_names_and_labels_are_stable():
    assert {s.name: [*hm.COMMON_LABELS, *s.labels] for s in hm.declared_series()} == STABLE
    assert hm.STAGES == ("parse", "decode", "preprocess", "forward", "encode")


def test_metrics_yaml_declares_every_series_with_its_labels_in_order():
    ours = declared(METRICS_CONFIG)
    for series in hm.declared_series():
        assert ours[series.kind].get(series.name) == [*hm.COMMON_LABELS, *series.labels], series.name


def test_metrics_yaml_keeps_torchserves_own_series():
    """metrics_config replaces TorchServe's file: its frontend section must stay whole."""
    ours, stock = yaml.safe_load(METRICS_CONFIG.read_text()), yaml.safe_load(TS_DEFAULT_METRICS.read_text())
    assert ours["ts_metrics"] == stock["ts_metrics"]
    for kind, specs in declared(TS_DEFAULT_METRICS).items():
        for name, dimensions in specs.items():
            assert declared(METRICS_CONFIG)[kind][name] == dimensions


def test_buckets_are_cumulative_with_sum_and_count():
    pending = hm.Pending()
    pending.observe(hm.STAGE_SECONDS, ("decode",), 0.003)
    pending.observe(hm.STAGE_SECONDS, ("decode",), 0.02, times=3)
    pending.observe(hm.STAGE_SECONDS, ("decode",), 60.0)  # beyond the last bound: +Inf only
    samples = {(s.name, labels): v for s, labels, v in pending.drain()}
    bucket = "handler_stage_seconds_bucket"
    assert samples[(bucket, ("decode", "0.0025"))] == 0
    assert samples[(bucket, ("decode", "0.005"))] == 1
    assert samples[(bucket, ("decode", "0.01"))] == 1
    assert samples[(bucket, ("decode", "0.025"))] == 4
    assert samples[(bucket, ("decode", "5"))] == 4
    assert samples[(bucket, ("decode", "+Inf"))] == 5
    assert samples[("handler_stage_seconds_count", ("decode",))] == 5
    assert samples[("handler_stage_seconds_sum", ("decode",))] == pytest.approx(60.063)
    assert pending.drain() == []  # drained: the next flush sends only what is new


def test_quantile_interpolates_as_promql():
    cumulative = {0.01: 0.0, 0.025: 50.0, 0.05: 100.0, float("inf"): 100.0}
    assert quantile(0.5, cumulative) == pytest.approx(0.025)
    assert quantile(0.75, cumulative) == pytest.approx(0.0375)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 0.1  # in +Inf: the highest finite bound
    assert difference({1.0: 5.0}, {1.0: 2.0}) == {1.0: 3.0}
    assert difference({1.0: 1.0}, {1.0: 7.0}) == {1.0: 1.0}  # a restarted server counts from zero


def test_worker_id_is_the_management_apis_id():
    assert hm.worker_id(["worker.py", "--sock-type", "unix", "--sock-name", "/tmp/.ts.sock.9003"]) == "9003"
    assert hm.worker_id(["worker.py", "--sock-type", "tcp", "--port", "9001"]) == "9001"


def worker_metrics(path: Path, caplog) -> hm.HandlerMetrics:
    cache = MetricsCacheYamlImpl(config_file_path=str(path))
    cache.initialize_cache()
    cache.model_name = "resnet18"
    caplog.set_level(logging.INFO)
    return hm.HandlerMetrics(cache, "resnet18", "1.0", worker="9000")


def frontend_reads(caplog) -> list[re.Match]:
    """The metric lines as the frontend reads them; a line it cannot parse fails the test."""
    parsed = []
    for record in caplog.records:
        line = LINE.match(record.getMessage())
        if line:
            match = METRIC.match(line.group(3))
            assert match, f"the frontend cannot parse {record.getMessage()!r}"
            parsed.append(match)
    return parsed


def test_every_line_the_worker_writes_is_what_the_frontend_expects(caplog):
    metrics = worker_metrics(METRICS_CONFIG, caplog)
    assert metrics.enabled
    with metrics.forward(images=3, threads=2):
        pass
    with metrics.stage("decode"):
        pass
    metrics.answered(3)
    metrics.refused("UnsupportedImage")
    metrics.explained()
    metrics.runtime("torchscript", "fp32")
    sent = metrics.flush()
    lines = frontend_reads(caplog)
    assert len(lines) == sent > 0
    assert not [r for r in caplog.records if "Failed" in r.getMessage()]
    names = ",".join(hm.COMMON_LABELS)
    for match in lines:
        dimensions = dict(pair.split(":", 1) for pair in match.group(4).split(","))
        assert list(dimensions)[:3] == names.split(",")
        assert dimensions["ModelName"] == "resnet18" and dimensions["ModelVersion"] == "1.0"
    refused = [m for m in lines if m.group(1) == "handler_refused_total"]
    assert [m.group(4) for m in refused] == ["ModelName:resnet18,ModelVersion:1.0,Level:Model,error:UnsupportedImage"]
    caplog.clear()
    assert metrics.flush() == 2  # idle: the worker's memory and heartbeat only


def test_metrics_are_off_with_torchserves_own_yaml(caplog):
    """Under a metrics YAML that does not declare them, TorchServe would drop every line: none sent."""
    metrics = worker_metrics(TS_DEFAULT_METRICS, caplog)
    metrics.refused("InvalidImage")
    assert not metrics.enabled and metrics.flush() == 0
    assert frontend_reads(caplog) == []


def test_prometheus_text_is_parsed_as_torchserve_writes_it():
    text = (
        "# HELP handler_images_total Torchserve prometheus counter metric with unit: count\n"
        "# TYPE handler_images_total counter\n"
        'handler_images_total{ModelName="resnet18",ModelVersion="1.0",Level="Model",Hostname="vm",} 7.0\n'
        'handler_stage_seconds_bucket{ModelName="resnet18",stage="forward",le="0.025",Hostname="vm",} 2.0\n'
        'handler_stage_seconds_bucket{ModelName="resnet18",stage="forward",le="+Inf",Hostname="vm",} 4.0\n'
        'handler_stage_seconds_sum{ModelName="resnet18",stage="forward",Hostname="vm",} 1.7E-4\n'
    )
    samples = parse_text(text)
    assert total(samples, "handler_images_total", ModelName="resnet18") == 7
    assert total(samples, "handler_stage_seconds_sum") == pytest.approx(1.7e-4)
    assert buckets(samples, "handler_stage_seconds", stage="forward") == {0.025: 2.0, float("inf"): 4.0}
