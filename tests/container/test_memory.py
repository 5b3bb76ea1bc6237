"""The memory proof with the image itself under the pod's memory limit (`make container-test`): bursts of
maximum-size bodies through every published door (HTTP inference, gRPC inference, HTTP and gRPC
management), with and without a key, and with the Kubernetes configuration (tokens off), with ordinary
photos interleaved, are all answered (an HTTP status or a gRPC status, never a reset or a dropped call),
the photos are classified, nothing is OOM-killed or replaced; a killed Java frontend makes the
container exit non-zero within seconds."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests

from service.client.grpc_api import stubs
from service.doors.budget import BUDGET
from service.names import DEFAULT_MODEL, GRPC_INFERENCE_PORT, GRPC_MANAGEMENT_PORT, INFERENCE_PORT, MANAGEMENT_PORT
from service.photos import grace_hopper
from tests.container import podman
from tests.test_doors import grpc_call

DOOR_PORTS = (INFERENCE_PORT, MANAGEMENT_PORT, GRPC_INFERENCE_PORT, GRPC_MANAGEMENT_PORT)
K8S_CONFIG = podman.ROOT / "deploy" / "k8s" / "config.properties"

pytestmark = pytest.mark.container
BURSTS = (24, 48, 96)
PHOTOS = 20
# Inside the image: the long-lived processes (the Java frontend, nginx, the supervisor, TorchServe's
# launcher and workers), by name and PID; not this script itself nor a health probe running now.
PROCESSES = (
    "import json, os, psutil\n"
    "keep = ('model_service_worker', 'entrypoint.py', 'torchserve', 'service.doors.gateway')\n"
    "found = [(p.name(), p.pid) for p in psutil.process_iter() if p.pid != os.getpid() and (\n"
    "    p.name() in ('java', 'nginx') or any(k in ' '.join(p.cmdline()) for k in keep))]\n"
    "print(json.dumps(sorted(found)))\n"
)
PEAK = (
    "from pathlib import Path\n"
    "for f in ('/sys/fs/cgroup/memory.peak', '/sys/fs/cgroup/memory/memory.max_usage_in_bytes'):\n"
    "    p = Path(f)\n"
    "    if p.exists(): print(p.read_text().strip()); break\n"
)


def start_limited(name: str, image: str, *flags: str) -> podman.Container:
    """The image under the pod's memory limit with every door published on loopback."""
    published = [flag for port in DOOR_PORTS for flag in ("-p", f"127.0.0.1::{port}")]
    return podman.start_container(name, image, "--memory", f"{BUDGET.limit_mib}m", "--memory-swap",
                                  f"{BUDGET.limit_mib}m", *published, *flags)


@pytest.fixture(scope="module")
def limited(built_image, container_figures):
    container = start_limited(f"ic-memory-{os.getpid()}", built_image.image)
    try:
        container.wait_healthy(300)
        container_figures["memory_limit_mib"] = BUDGET.limit_mib
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def kubernetes_configured(built_image):
    """The image as deploy/k8s runs it: its config.properties mounted, token authorization off."""
    container = start_limited(f"ic-memory-k8s-{os.getpid()}", built_image.image,
                              "-v", f"{K8S_CONFIG}:/srv/k8s/config.properties:ro",
                              "-e", "TS_CONFIG_FILE=/srv/k8s/config.properties")
    try:
        container.wait_healthy(300)
        yield container
    finally:
        container.remove()


def processes(container: podman.Container) -> list[tuple[str, int]]:
    result = container.exec("python", "-c", PROCESSES)
    assert result.returncode == 0, result.stderr
    return [tuple(p) for p in json.loads(result.stdout)]


def peak_mib(container: podman.Container) -> float | None:
    result = container.exec("python", "-c", PEAK)
    return int(result.stdout) / 2**20 if result.returncode == 0 and result.stdout.strip() else None


def grpc_management_call(address: str, body: bytes) -> str:
    messages, services = stubs("management")
    try:
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
            services.ManagementAPIsServiceStub(channel).RegisterModel(
                messages.RegisterModelRequest(url="x" * len(body)), timeout=180)
            return "OK"
    except grpc.RpcError as e:
        return e.code().name


def send_management(url: str, body: bytes) -> int | str:
    try:
        response = requests.post(f"{url}/models", data=body, timeout=180)
    except requests.RequestException as e:
        return type(e).__name__
    return response.status_code if "json" in response.headers.get("Content-Type", "") else f"{response.status_code}?"


def burst_beside_photos(container: podman.Container, call, bodies: int, photo_key: str | None
                        ) -> tuple[Counter, Counter]:
    """`bodies` calls of `call()` at once, 20 ordinary photos over HTTP interleaved with them."""
    url, photo = container.url(INFERENCE_PORT), grace_hopper().read_bytes()
    with ThreadPoolExecutor(bodies + PHOTOS) as pool:
        calls = [pool.submit(call) for _ in range(bodies)]
        photos = []
        for _ in range(PHOTOS):
            photos.append(pool.submit(send, url, photo, photo_key))
            time.sleep(0.05)
        return Counter(f.result() for f in calls), Counter(f.result() for f in photos)


def still_whole(container: podman.Container, before: list) -> None:
    assert container.inspect("{{.State.Running}}") == "true" and container.inspect("{{.State.OOMKilled}}") == "false"
    assert processes(container) == before, "a process was killed and replaced"


def send(url: str, body: bytes, key: str | None) -> int | str:
    headers = {"Content-Type": "image/jpeg", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        response = requests.post(f"{url}/predictions/{DEFAULT_MODEL}", data=body, headers=headers, timeout=180)
    except requests.RequestException as e:
        return type(e).__name__
    return response.status_code if "json" in response.headers.get("Content-Type", "") else f"{response.status_code}?"


@pytest.mark.parametrize("with_key", [True, False], ids=["valid-key", "no-key"])
def test_bursts_of_maximum_size_uploads_are_answered_under_the_pod_limit(limited, with_key, container_figures):
    url = limited.url(INFERENCE_PORT)
    keys = limited.keys()
    before = processes(limited)
    big = os.urandom(BUDGET.max_request_bytes - 1024)
    photo = grace_hopper().read_bytes()
    for burst in BURSTS:
        started = time.monotonic()
        with ThreadPoolExecutor(burst + PHOTOS) as pool:
            bigs = [pool.submit(send, url, big, keys["inference"] if with_key else None) for _ in range(burst)]
            photos = []
            for _ in range(PHOTOS):  # interleaved with the burst, not after it
                photos.append(pool.submit(send, url, photo, keys["inference"]))
                time.sleep(0.05)
            big_answers = Counter(f.result() for f in bigs)
            photo_answers = Counter(f.result() for f in photos)
        figures = {"burst": burst, "key": with_key, "big": dict(big_answers), "photos": dict(photo_answers),
                   "seconds": round(time.monotonic() - started, 1), "peak_mib": peak_mib(limited)}
        container_figures.setdefault("memory_bursts", []).append(figures)
        print(figures)
        allowed = {413, 503} if with_key else {400, 503}
        assert set(big_answers) <= allowed, figures
        assert photo_answers == Counter({200: PHOTOS}), figures
        assert limited.inspect("{{.State.Running}}") == "true" and limited.inspect("{{.State.OOMKilled}}") == "false"
        assert processes(limited) == before, "a process was killed and replaced"


@pytest.mark.parametrize("with_key", [True, False], ids=["valid-key", "no-key"])
def test_grpc_burst_of_maximum_size_calls_is_answered_under_the_pod_limit(limited, with_key, container_figures):
    address = f"127.0.0.1:{limited.host_port(GRPC_INFERENCE_PORT)}"
    keys, before = limited.keys(), processes(limited)
    big = os.urandom(BUDGET.max_request_bytes - 2**20)
    started = time.monotonic()
    key = keys["inference"] if with_key else None
    calls, photos = burst_beside_photos(limited, lambda: grpc_call(address, big, key), 48, keys["inference"])
    figures = {"door": "grpc", "burst": 48, "key": with_key, "calls": dict(calls), "photos": dict(photos),
               "seconds": round(time.monotonic() - started, 1), "peak_mib": peak_mib(limited)}
    container_figures.setdefault("memory_bursts", []).append(figures)
    print(figures)
    allowed = {"RESOURCE_EXHAUSTED"} | (set() if with_key else {"PERMISSION_DENIED"})
    assert set(calls) <= allowed, figures
    assert photos == Counter({200: PHOTOS}), figures
    still_whole(limited, before)


def test_management_doors_refuse_large_bodies_under_the_pod_limit(limited, container_figures):
    keys, before = limited.keys(), processes(limited)
    big = os.urandom(BUDGET.max_request_bytes - 2**20)
    http_url, grpc_address = limited.url(MANAGEMENT_PORT), f"127.0.0.1:{limited.host_port(GRPC_MANAGEMENT_PORT)}"
    http, photos = burst_beside_photos(limited, lambda: send_management(http_url, big), 48, keys["inference"])
    grpc_calls, grpc_photos = burst_beside_photos(limited, lambda: grpc_management_call(grpc_address, big), 48,
                                                  keys["inference"])
    figures = {"door": "management", "burst": 48, "http": dict(http), "grpc": dict(grpc_calls),
               "photos": dict(photos + grpc_photos), "peak_mib": peak_mib(limited)}
    container_figures.setdefault("memory_bursts", []).append(figures)
    print(figures)
    assert http == Counter({413: 48}) and grpc_calls == Counter({"RESOURCE_EXHAUSTED": 48}), figures
    assert photos + grpc_photos == Counter({200: 2 * PHOTOS}), figures
    still_whole(limited, before)


def test_kubernetes_configuration_takes_the_bursts_too(kubernetes_configured, container_figures):
    """Tokens off (deploy/k8s): every call is let in as far as the doors allow."""
    container, before = kubernetes_configured, processes(kubernetes_configured)
    big = os.urandom(BUDGET.max_request_bytes - 2**20)
    address, url = f"127.0.0.1:{container.host_port(GRPC_INFERENCE_PORT)}", container.url(INFERENCE_PORT)
    grpc_calls, grpc_photos = burst_beside_photos(container, lambda: grpc_call(address, big, None), 48, None)
    http, photos = burst_beside_photos(container, lambda: send(url, big, None), 48, None)
    figures = {"door": "kubernetes config (tokens off)", "burst": 48, "grpc": dict(grpc_calls), "http": dict(http),
               "photos": dict(photos + grpc_photos), "peak_mib": peak_mib(container)}
    container_figures.setdefault("memory_bursts", []).append(figures)
    print(figures)
    assert set(grpc_calls) <= {"RESOURCE_EXHAUSTED"} and set(http) <= {413, 503}, figures
    assert photos + grpc_photos == Counter({200: 2 * PHOTOS}), figures
    still_whole(container, before)


def test_killed_frontend_makes_the_container_exit_non_zero(limited, container_figures):
    kill = "import os, psutil; [os.kill(p.pid, 9) for p in psutil.process_iter() if p.name() == 'java']"
    assert limited.exec("python", "-c", kill).returncode == 0
    started = time.monotonic()
    while limited.inspect("{{.State.Running}}") == "true":
        assert time.monotonic() - started < 30, "the container still runs 30 s after its frontend was killed"
        time.sleep(0.5)
    container_figures["frontend_killed_exit_s"] = round(time.monotonic() - started, 1)
    assert int(limited.inspect("{{.State.ExitCode}}")) != 0
