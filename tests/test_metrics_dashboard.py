"""The Grafana dashboard and the Prometheus config, checked offline (Grafana cannot run here):
every panel's PromQL parses with promtool and names only series that exist (the handler's, as
declared in config/metrics.yaml, or TorchServe's own); tests/test_prometheus.py evaluates the
same expressions on a real scrape."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from handler.metrics import declared_series
from service.names import METRICS_CONFIG, ROOT
from tests.prometheus import JOB, PROMTOOL

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "image-classifier.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMQL_WORDS = {
    "sum", "max", "min", "count", "avg", "by", "on", "and", "or", "unless", "rate", "histogram_quantile",
    "time", "le", "stage", "ModelName", "ModelVersion", "model_name", "worker", "error", "runtime", "precision",
}


def dashboard_expressions(model: str = ".*", rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate_interval).replace("$model", model)
            found.append((panel["title"], expr))
    return found


def known_series() -> set[str]:
    """The handler's series and TorchServe's frontend series that the metrics YAML declares."""
    config = yaml.safe_load(METRICS_CONFIG.read_text())
    frontend = {m["name"] for specs in config["ts_metrics"].values() for m in specs}
    return {s.name for s in declared_series()} | frontend


def test_every_panel_query_parses_with_promtool(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(dashboard_expressions())
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in result.stdout


def test_panels_name_only_series_that_exist():
    known = known_series()
    for title, expr in dashboard_expressions():
        unquoted = re.sub(r'"[^"]*"', "", re.sub(r"\[[^\]]*\]", "", expr))
        names = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", unquoted)) - PROMQL_WORDS
        assert names and names <= known, f"{title}: {names - known}"


def test_dashboard_covers_what_an_operator_needs():
    titles = " ".join(title for title, _ in dashboard_expressions()).lower()
    for topic in ("throughput", "stage", "batch size", "refusals", "workers", "threads", "memory", "queue"):
        assert topic in titles, topic
    exprs = " ".join(expr for _, expr in dashboard_expressions())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, stage) (rate(handler_stage_seconds_bucket" in exprs


def test_grafana_provisioning_points_at_the_dashboards_data_source():
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (datasource,) = source["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]} and datasource["url"] == "http://prometheus:9090"


def test_prometheus_config_is_valid_and_scrapes_torchserve():
    result = subprocess.run([PROMTOOL, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (job,) = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    assert job["job_name"] == JOB and job["static_configs"][0]["targets"] == ["torchserve:8082"]


def test_compose_runs_prometheus_and_grafana_with_these_files():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    mounts = " ".join(compose["prometheus"]["volumes"] + compose["grafana"]["volumes"])
    for path in (PROMETHEUS_CONFIG, GRAFANA / "provisioning", GRAFANA / "dashboards"):
        assert "./" + str(Path(path).relative_to(ROOT)) in mounts, path
