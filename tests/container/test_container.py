"""The images users build, built and run for real with Podman (`make container-test`), checked from
outside: the serving image holds only what serving needs (no CUDA, torchvision, pip cache, compiler,
UI or training code in any layer), is healthy by its own HEALTHCHECK, answers a real photo with the
token from its own key file exactly as the same archive does served here (its CPU torch may be another
release than the builder's: logits within 1e-5), runs as uid 10001, stops cleanly within compose's grace
period; the UI image (no torch) runs beside it on a shared network and run volume, as compose.yaml
defines them, and classifies a photo in a real browser."""

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
from playwright.sync_api import sync_playwright

from service.doors.budget import DEFAULT_RUNTIME, WORKER_MIB
from service.local.torchserve import TorchServe
from service.names import DEFAULT_MODEL, GRPC_INFERENCE_PORT, INFERENCE_PORT, MANAGEMENT_PORT, UI_PORT
from service.photos import grace_hopper, photos
from tests.container import podman
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
RUN_UID = 10001  # the Dockerfile's model-server user
HEALTHY_WITHIN_S = 300  # the HEALTHCHECK's start period is 120 s; two shared cores are slow
SERVING_MAX_BYTES = 2.0e9  # issue targets: a CPU serving image under 2 GB, a UI image under 0.5 GB
UI_MAX_BYTES = 0.5e9
# What no layer of the serving image may hold: CUDA libraries, torchvision, a pip cache or pip itself,
# a compiler, the UI's or the fine-tuning code.
NOT_IN_SERVING = {
    "CUDA": re.compile(r"/(nvidia|triton)/|libcu(dart|blas|dnn|fft|sparse|rand|solver)|libnccl|libnvrtc"),
    "torchvision": re.compile(r"site-packages/torchvision/"),
    "a pip cache": re.compile(r"(^|/)\.cache/pip/|/root/\.cache/"),
    "pip": re.compile(r"site-packages/pip/"),
    "a compiler": re.compile(r"^usr/(bin/(gcc|cc|g\+\+)(-\d+)?$|lib/gcc/.*/cc1$)"),
    "Streamlit": re.compile(r"site-packages/streamlit/"),
    "training code": re.compile(r"^srv/app/(service/(finetune|bench|archive)|scripts|ui)/"),
}

pytestmark = pytest.mark.container
# Inside the image: each TorchServe worker's proportional set size (MiB), read as the workers' own user.
WORKER_PSS = (  # not this script's own process, whose command line names the workers too
    "import json, os, psutil\n"
    "workers = [p for p in psutil.process_iter(['cmdline']) if p.pid != os.getpid()\n"
    "           and 'model_service_worker' in ' '.join(p.info['cmdline'] or [])]\n"
    "print(json.dumps([round(p.memory_full_info().pss / 2**20, 1) for p in workers]))\n"
)


def copy_archive_out(image: str, folder: Path) -> Path:
    """The image's archive, copied into `folder` from a created (never started) container."""
    name = f"ic-archive-{os.getpid()}"
    podman.podman("create", "--name", name, image)
    try:
        podman.podman("cp", f"{name}:/srv/app/model_store/{DEFAULT_MODEL}.mar", str(folder))
    finally:
        podman.podman("rm", "--force", name, check=False)
    return folder / f"{DEFAULT_MODEL}.mar"


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


def test_builds_in_oci_format_too(built_image, output_dir, container_figures, torch_args):
    """Podman's default format has no SHELL and no HEALTHCHECK: the Dockerfile must still build."""
    build = podman.build_image(output_dir / "container-build-oci.log", podman.OCI_IMAGE, "oci", WEIGHTS="random",
                               **torch_args)
    container_figures["build_oci_s"] = round(build.seconds, 1)
    user = podman.podman("image", "inspect", "--format", "{{.User}}", build.image).stdout.strip()
    assert user == f"{RUN_UID}:{RUN_UID}"
    assert abs(build.size_bytes - built_image.size_bytes) < 0.05 * built_image.size_bytes


def test_serving_image_holds_only_what_serving_needs(built_image, tmp_path, container_figures):
    """Every layer's files (`podman save`), not just the final tree: a file a later layer deletes still ships."""
    files = podman.layer_files(built_image.image, tmp_path)
    found = {what: sorted({name for names in files.values() for name in names if pattern.search(name)})[:5]
             for what, pattern in NOT_IN_SERVING.items()}
    assert not any(found.values()), {what: names for what, names in found.items() if names}
    assert any(name.endswith("site-packages/torch/__init__.py") for names in files.values() for name in names)
    container_figures["serving_layers"] = len(files)
    assert built_image.size_bytes <= SERVING_MAX_BYTES, f"{built_image.size_bytes / 1e9:.2f} GB"


def test_archive_answers_the_same_on_the_serving_torch(built_image, tmp_path, container_figures):
    """The builder's torch (requirements.txt's) made the archive; the serving stage's CPU torch may be another
    release (the one this machine's wheel folder has). Same photos, same code path: logits within 1e-5."""
    archive = copy_archive_out(built_image.image, tmp_path)
    (tmp_path / "photos").mkdir()
    for name, path in photos().items():
        (tmp_path / "photos" / f"{name}{path.suffix}").write_bytes(path.read_bytes())
    for path in (tmp_path, tmp_path / "photos", archive, *(tmp_path / "photos").iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's user (uid 10001)
    names = sorted(p.name for p in (tmp_path / "photos").iterdir())
    inside = podman.podman(
        "run", "--rm", *podman.ULIMITS, "-v", f"{tmp_path}:/check:ro", "-v", f"{ROOT / 'tests'}:/srv/app/tests:ro",
        built_image.image, "python", "/srv/app/tests/container/logits.py", f"/check/{archive.name}",
        *(f"/check/photos/{n}" for n in names), timeout=300).stdout
    here = subprocess.run([sys.executable, str(ROOT / "tests" / "container" / "logits.py"), str(archive),
                           *(str(tmp_path / "photos" / n) for n in names)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300, check=True).stdout
    inside, here = json.loads(inside.splitlines()[-1]), json.loads(here.splitlines()[-1])
    difference = float(np.abs(np.array(inside["logits"]) - np.array(here["logits"])).max())
    container_figures["logits"] = {"serving_torch": inside["torch"], "builder_torch": here["torch"],
                                   "photos": len(names), "max_abs_difference": difference}
    assert inside["torch"] != here["torch"] or difference == 0.0
    assert difference <= 1e-5, container_figures["logits"]


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


def test_answers_equal_the_same_archive_served_here(server, built_image, tmp_path):
    """`make run` serves the archive with this machine's torch: the image answers every photo alike."""
    server.wait_healthy(HEALTHY_WITHIN_S)
    store = tmp_path / "store"
    store.mkdir()
    copy_archive_out(built_image.image, store)
    token = server.keys()["inference"]
    with TorchServe.on_free_ports(tmp_path / "run", store) as here:
        client = here.client()
        for name, path in photos().items():
            headers = {"Content-Type": "application/octet-stream"}  # as the client sends a .png or .jpg name
            theirs = requests.post(f"{server.url(INFERENCE_PORT)}/predictions/{DEFAULT_MODEL}", data=path.read_bytes(),
                                   headers={**headers, "Authorization": f"Bearer {token}"}, timeout=60).json()
            ours = client.predict(DEFAULT_MODEL, path.read_bytes(), shrink=False).json()
            assert [p["label"] for p in theirs["predictions"]] == [p["label"] for p in ours["predictions"]], name
            assert np.allclose([p["probability"] for p in theirs["predictions"]],
                               [p["probability"] for p in ours["predictions"]], atol=1e-5), name
            assert theirs["model"] == ours["model"], name


def test_grpc_and_oip_clients_work_as_the_readme_shows(server, tmp_path):
    """tritonclient (HTTP and gRPC) and docs/API.md's gRPC example against the image's published doors."""
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


def test_worker_memory_in_the_image(server, container_figures):
    """A worker's PSS after 20 photos, as service/doors/budget.py's figure was measured: within it."""
    server.wait_healthy(HEALTHY_WITHIN_S)
    url, token = f"{server.url(INFERENCE_PORT)}/predictions/{DEFAULT_MODEL}", server.keys()["inference"]
    for _ in range(20):
        answer = requests.post(url, data=grace_hopper().read_bytes(), timeout=60,
                               headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
    result = server.exec("python", "-c", WORKER_PSS)
    pss = json.loads(result.stdout)
    container_figures["worker_pss_mib"] = pss
    assert pss and max(pss) <= WORKER_MIB[DEFAULT_RUNTIME], pss


def test_compose_ui_service_beside_it(stack, server, ui_image, container_figures, output_dir):
    """compose.yaml's ui service: the UI image (no torch), its environment, read-only run volume and
    healthcheck; it reaches TorchServe by service name with the tokens from the shared volume, and a
    photo dropped on its page in Chromium gets the label the API gives."""
    tag, started = stack
    server.wait_healthy(HEALTHY_WITHIN_S)  # compose: depends_on torchserve service_healthy
    service = COMPOSE["services"]["ui"]
    assert service["build"]["target"] == "ui" and service["image"] != COMPOSE["services"]["torchserve"]["image"]
    ui = podman.start_container(f"{tag}-ui", ui_image.image, "--network", tag,
                                *service_run_flags(service, {"ts-run": tag}), command=tuple(service.get("command", ())))
    started.append(ui)
    container_figures["ui_healthy_s"] = round(ui.wait_healthy(120), 1)
    health = requests.get(f"{ui.url(UI_PORT)}/_stcore/health", timeout=10)
    assert health.status_code == 200 and health.text == "ok"
    no_torch = ui.exec("python", "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr, no_torch.stderr
    check = "from service.client.api import Settings; c = Settings.from_env().client(timeout=10); " \
            "print(c.ping().status_code, c.list_models().status_code)"
    result = ui.exec("python", "-c", check)
    assert result.stdout.split() == ["200", "200"], result.stdout + result.stderr
    token = server.keys()["inference"]
    expected = requests.post(f"{server.url(INFERENCE_PORT)}/predictions/{DEFAULT_MODEL}", timeout=60,
                             data=grace_hopper().read_bytes(),
                             headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}"}).json()
    classify_in_browser(ui.url(UI_PORT), expected["predictions"][0]["label"], output_dir / "ui-container.png")
    assert ui_image.size_bytes <= UI_MAX_BYTES, f"{ui_image.size_bytes / 1e9:.2f} GB"


def classify_in_browser(url: str, label: str, screenshot: Path) -> None:
    """Chromium on the page: drop a photo on the files input, wait for the run's end, find the label."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_text("TorchServe is reachable").wait_for()
            page.locator('input[type="file"]:not([webkitdirectory])').first.set_input_files(str(grace_hopper()))
            page.get_by_text(re.compile(r"1 of 1 classified")).first.wait_for()
            page.get_by_text(label).first.wait_for()
            page.screenshot(path=str(screenshot), full_page=True)
            assert "Traceback" not in page.content()
        finally:
            browser.close()


def test_stops_cleanly_within_the_grace_period(server, container_figures):
    """Last: `podman stop` sends SIGTERM; tini -g passes it to TorchServe's whole process group."""
    server.wait_healthy(HEALTHY_WITHIN_S)
    grace = grace_seconds()
    seconds, exit_code = server.stop(grace)
    container_figures["stop_s"] = round(seconds, 2)
    container_figures["stop_exit_code"] = exit_code
    assert seconds < grace, f"took {seconds:.1f} s: killed at the end of the grace period?"
    assert exit_code == 0, f"exit code {exit_code}:\n{server.logs()}"  # tini -e 143: a requested stop
