"""The image users build, built and run for real with Podman (`make container-test`), checked from
outside: healthy by its own HEALTHCHECK, answers a real photo with the token from its own key
file, runs as uid 10001, stops cleanly within compose's grace period; the compose file's UI
service runs beside it on a shared network and run volume, as compose.yaml defines them."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml

from service.names import DEFAULT_MODEL, GRPC_INFERENCE_PORT, INFERENCE_PORT, MANAGEMENT_PORT, UI_PORT
from service.photos import grace_hopper
from tests.container import podman

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
RUN_UID = 10001  # the Dockerfile's model-server user
HEALTHY_WITHIN_S = 300  # the HEALTHCHECK's start period is 120 s; two shared cores are slow

pytestmark = pytest.mark.container


def grace_seconds() -> int:
    """compose.yaml's stop_grace_period for TorchServe ("30s")."""
    match = re.fullmatch(r"(\d+)s", str(COMPOSE["services"]["torchserve"]["stop_grace_period"]))
    return int(match.group(1))


def service_run_flags(service: dict, volumes: dict[str, str]) -> list[str]:
    """compose.yaml's ports, volumes, environment and healthcheck of one service as `podman run`
    flags; host ports become free loopback ones (other servers may hold 8080 here)."""
    flags = []
    for port in service.get("ports", []):
        flags += ["-p", f"127.0.0.1::{port.rsplit(':', 1)[1]}"]
    for volume in service.get("volumes", []):
        name, _, rest = volume.partition(":")
        flags += ["-v", f"{volumes[name]}:{rest}"]
    for key, value in (service.get("environment") or {}).items():
        flags += ["-e", f"{key}={value}"]
    if "healthcheck" in service:
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", test
        flags += ["--health-cmd", json.dumps(test[1:])]  # a JSON array: exec form, no shell
    return flags


@pytest.fixture(scope="module")
def stack(built_image):
    """A network and a run volume named after this run, as compose makes them; removed at the end."""
    tag = f"ic-test-{os.getpid()}"
    podman.podman("network", "create", tag)
    podman.podman("volume", "create", tag)
    started: list[podman.Container] = []
    try:
        yield tag, started
    finally:
        for container in started:
            container.remove()
        podman.podman("volume", "rm", "--force", tag, check=False)
        podman.podman("network", "rm", "--force", tag, check=False)


@pytest.fixture(scope="module")
def server(stack, built_image) -> podman.Container:
    """compose.yaml's torchserve service, reachable as "torchserve" on the stack's network."""
    tag, started = stack
    service = COMPOSE["services"]["torchserve"]
    flags = service_run_flags(service, {"ts-run": tag})
    container = podman.start_container(
        f"{tag}-torchserve", built_image.image, "--network", tag, "--network-alias", "torchserve", *flags
    )
    started.append(container)
    return container


def test_image_runs_as_non_root_with_its_healthcheck(built_image):
    config = podman.podman("image", "inspect", "--format", "{{.User}} {{json .HealthCheck}}", built_image.image)
    user, _, healthcheck = config.stdout.strip().partition(" ")
    assert user == f"{RUN_UID}:{RUN_UID}"
    assert "/srv/app/deploy/docker/probe.py" in healthcheck and "ready" in healthcheck


def test_builds_in_oci_format_too(built_image, output_dir, container_figures):
    """Podman's default format has no SHELL and no HEALTHCHECK: the Dockerfile must still build."""
    build = podman.build_image(output_dir / "container-build-oci.log", podman.OCI_IMAGE, "oci", WEIGHTS="random")
    container_figures["build_oci_s"] = round(build.seconds, 1)
    user = podman.podman("image", "inspect", "--format", "{{.User}}", build.image).stdout.strip()
    assert user == f"{RUN_UID}:{RUN_UID}"
    assert abs(build.size_bytes - built_image.size_bytes) < 0.05 * built_image.size_bytes


def test_becomes_healthy_by_its_own_healthcheck(server, container_figures):
    seconds = server.wait_healthy(HEALTHY_WITHIN_S)
    container_figures["healthy_s"] = round(seconds, 1)
    assert server.inspect("{{.State.Running}}") == "true"


def test_answers_a_photo_with_the_token_from_its_key_file(server, container_figures):
    server.wait_healthy(HEALTHY_WITHIN_S)
    url = f"{server.url(INFERENCE_PORT)}/predictions/{DEFAULT_MODEL}"
    photo = grace_hopper().read_bytes()
    headers = {"Content-Type": "image/jpeg"}
    refused = requests.post(url, data=photo, headers=headers, timeout=60)
    assert refused.status_code == 400  # token authorization is on in the image
    token = server.keys()["inference"]
    started = time.monotonic()
    answer = requests.post(url, data=photo, headers={**headers, "Authorization": f"Bearer {token}"}, timeout=60)
    container_figures["first_answer_s"] = round(time.monotonic() - started, 3)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["predictions"]) == 3 and body["model"]["random_weights"] is True  # WEIGHTS=random
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


def test_grpc_and_oip_clients_work_as_the_readme_shows(server, tmp_path):
    """tritonclient (HTTP and gRPC) and the README's gRPC example against the image's published doors."""
    server.wait_healthy(HEALTHY_WITHIN_S)
    token, photo = server.keys()["inference"], grace_hopper().read_bytes()
    expected = requests.post(f"{server.url(INFERENCE_PORT)}/predictions/{DEFAULT_MODEL}", data=photo, timeout=60,
                             headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}"}).json()
    labels = [p["label"] for p in expected["predictions"]]
    http = triton_http.InferenceServerClient(server.url(INFERENCE_PORT).removeprefix("http://"))
    grpc_address = f"127.0.0.1:{server.host_port(GRPC_INFERENCE_PORT)}"
    grpc = triton_grpc.InferenceServerClient(grpc_address)
    for client, headers in ((http, {"Authorization": f"Bearer {token}"}), (grpc, {"authorization": f"Bearer {token}"})):
        assert client.is_server_ready(headers=headers) and client.is_model_ready(DEFAULT_MODEL, headers=headers)
        module = triton_http if client is http else triton_grpc
        images = module.InferInput("image", [1], "BYTES")
        if client is http:
            images.set_data_from_numpy(np.array([base64.b64encode(photo)], dtype=object), binary_data=False)
        else:
            images.set_data_from_numpy(np.array([photo], dtype=object))
        answer = client.infer(DEFAULT_MODEL, [images], headers=headers).as_numpy("label")[0]
        assert [a.decode() if isinstance(a, bytes) else a for a in answer] == labels
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"inference": {"key": token}}))
    (tmp_path / "photo.jpg").write_bytes(photo)
    example = subprocess.run([sys.executable, str(ROOT / "docs" / "grpc_example.py"), str(tmp_path / "photo.jpg")],
                             env={**os.environ, "GRPC_ADDRESS": grpc_address, "KEY_FILE": str(key_file)},
                             capture_output=True, text=True, timeout=120)
    assert example.returncode == 0 and f"'label': '{labels[0]}'" in example.stdout, example.stderr


def test_every_process_runs_as_the_model_server_user(server):
    server.wait_healthy(HEALTHY_WITHIN_S)
    main = psutil.Process(server.main_pid())  # tini, as seen from the host (rootful, no user namespace)
    processes = [main, *main.children(recursive=True)]
    names = {p.name() for p in processes}
    assert "java" in names and any(name.startswith("python") for name in names), names
    assert {(p.uids().real, p.uids().effective) for p in processes} == {(RUN_UID, RUN_UID)}


def test_management_published_on_loopback_only(server):
    ports = server.inspect("{{json .NetworkSettings.Ports}}")
    assert f'"{MANAGEMENT_PORT}/tcp"' in ports
    assert all(ip == "127.0.0.1" for ip in re.findall(r'"HostIp":"([^"]*)"', ports)), ports


def test_compose_ui_service_beside_it(stack, server, built_image, container_figures):
    """compose.yaml's ui service: same image, its command, environment, read-only run volume and
    own healthcheck; it reaches TorchServe by service name with the tokens from the shared volume."""
    tag, started = stack
    server.wait_healthy(HEALTHY_WITHIN_S)  # compose: depends_on torchserve service_healthy
    service = COMPOSE["services"]["ui"]
    assert service["image"] == COMPOSE["services"]["torchserve"]["image"]
    ui = podman.start_container(
        f"{tag}-ui", built_image.image, "--network", tag, *service_run_flags(service, {"ts-run": tag}),
        command=tuple(service["command"]),
    )
    started.append(ui)
    container_figures["ui_healthy_s"] = round(ui.wait_healthy(120), 1)
    health = requests.get(f"{ui.url(UI_PORT)}/_stcore/health", timeout=10)
    assert health.status_code == 200 and health.text == "ok"
    check = "from service.client.api import Settings; c = Settings.from_env().client(timeout=10); " \
            "print(c.ping().status_code, c.list_models().status_code)"
    result = ui.exec("python", "-c", check)
    assert result.stdout.split() == ["200", "200"], result.stdout + result.stderr


def test_stops_cleanly_within_the_grace_period(server, container_figures):
    """Last: `podman stop` sends SIGTERM; tini -g passes it to TorchServe's whole process group."""
    server.wait_healthy(HEALTHY_WITHIN_S)
    grace = grace_seconds()
    seconds, exit_code = server.stop(grace)
    container_figures["stop_s"] = round(seconds, 2)
    container_figures["stop_exit_code"] = exit_code
    assert seconds < grace, f"took {seconds:.1f} s: killed at the end of the grace period?"
    assert exit_code == 0, f"exit code {exit_code}:\n{server.logs()}"  # tini -e 143: a requested stop
