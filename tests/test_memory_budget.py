"""The deployment files state the memory budget's numbers (service/doors/budget.py), so they cannot drift."""

from __future__ import annotations

import re

import yaml

from handler.settings import DEFAULTS
from service.doors.budget import BUDGET, MiB
from service.doors.front import Doors, nginx_config
from service.names import CONFIG, ROOT
from service.properties import read_properties

CONTAINER_CONFIGS = [ROOT / "deploy" / "docker" / "config.properties", ROOT / "deploy" / "k8s" / "config.properties"]


def test_budget_fits_its_own_limit_with_margin():
    assert BUDGET.worst_mib * (1 + BUDGET.margin) <= BUDGET.limit_mib
    assert BUDGET.max_pixels == DEFAULTS.max_pixels
    # The largest legal image, base64-encoded, still fits the largest legal body.
    assert DEFAULTS.max_image_bytes * 4 / 3 < BUDGET.max_request_bytes


def test_server_configs_state_the_budget():
    for path in [CONFIG, *CONTAINER_CONFIGS]:
        assert int(read_properties(path)["max_request_size"]) == BUDGET.max_request_bytes, path
    for path in CONTAINER_CONFIGS:
        props = read_properties(path)
        assert props["vmargs"] == BUDGET.vmargs, path
        # TorchServe's inference port is reachable only through the front.
        assert props["inference_address"].startswith("http://127.0.0.1:"), path


def _memory(resources: dict) -> tuple[str, str]:
    return resources["requests"]["memory"], resources["limits"]["memory"]


def test_manifests_and_compose_give_the_budgeted_memory():
    expected = (BUDGET.kubernetes_quantity(BUDGET.limit_mib),) * 2
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert _memory(container["resources"]) == expected
    assert container["resources"]["limits"]["cpu"] == str(BUDGET.workers), "the budget counts one worker per core"
    service = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert _memory(service["spec"]["predictor"]["model"]["resources"]) == expected
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert compose["services"]["torchserve"]["mem_limit"] == f"{BUDGET.limit_mib}m"


def test_the_run_volume_holds_the_doors_spools_and_the_logs():
    """The doors spool what they receive to the run directory (an emptyDir in Kubernetes, evicted past its
    sizeLimit): the most they can spool at once, plus room for logs, must fit."""
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    limit = volumes["run"]["emptyDir"]["sizeLimit"]
    assert limit.endswith("Gi") and int(limit[:-2]) * 1024 >= BUDGET.spool_mib + 256, (limit, BUDGET.spool_mib)


def test_dockerfile_runs_the_front_and_keeps_malloc_arenas_few():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"apt-get install[^\n]*\bnginx\b", dockerfile)
    assert 'CMD ["python", "/srv/app/deploy/docker/entrypoint.py"]' in dockerfile
    assert "MALLOC_ARENA_MAX=2" in dockerfile


def test_front_admits_what_the_budget_counts(tmp_path):
    """The rendered nginx config carries the budget's body limit, buffer and per-class connections."""
    torchserve = {"inference_address": "http://127.0.0.1:2", "management_address": "http://127.0.0.1:3",
                  "metrics_address": "http://127.0.0.1:4", "grpc_inference_port": "5", "grpc_management_port": "6"}
    config = nginx_config(Doors.behind(torchserve, "127.0.0.1"), tmp_path)
    assert f"client_max_body_size {BUDGET.max_request_bytes};" in config
    assert f"client_body_buffer_size {BUDGET.front_buffer_kib}k;" in config
    assert f"limit_conn front {BUDGET.front_connections};" in config
    for body_class in BUDGET.body_classes:
        assert f"upstream {body_class.name} {{ zone {body_class.name} 64k; server 127.0.0.1:2 " \
               f"max_conns={body_class.connections}; }}" in config
    admitted = sum(c.max_bytes * c.connections for c in BUDGET.body_classes)
    assert admitted < 128 * MiB
