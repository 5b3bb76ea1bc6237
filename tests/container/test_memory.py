"""Issue 16's proof, with the image itself under the pod's memory limit (`make container-test`):
bursts of maximum-size uploads, with and without a key, with ordinary photos interleaved, are all
answered (no resets), the photos are classified, nothing is OOM-killed; a killed Java frontend
makes the container exit non-zero within seconds."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service.memory_budget import BUDGET
from service.names import DEFAULT_MODEL, INFERENCE_PORT
from service.photos import grace_hopper
from tests.container import podman

pytestmark = pytest.mark.container
BURSTS = (24, 48, 96)
PHOTOS = 20
# Inside the image: the long-lived processes (the Java frontend, nginx, the supervisor, TorchServe's
# launcher and workers), by name and PID; not this script itself nor a health probe running now.
PROCESSES = (
    "import json, os, psutil\n"
    "keep = ('model_service_worker', 'entrypoint.py', 'torchserve')\n"
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


@pytest.fixture(scope="module")
def limited(built_image, container_figures):
    name = f"ic-memory-{os.getpid()}"
    container = podman.start_container(
        name, built_image.image, "--memory", f"{BUDGET.limit_mib}m", "--memory-swap", f"{BUDGET.limit_mib}m",
        "-p", f"127.0.0.1::{INFERENCE_PORT}",
    )
    try:
        container.wait_healthy(300)
        container_figures["memory_limit_mib"] = BUDGET.limit_mib
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


def test_killed_frontend_makes_the_container_exit_non_zero(limited, container_figures):
    kill = "import os, psutil; [os.kill(p.pid, 9) for p in psutil.process_iter() if p.name() == 'java']"
    assert limited.exec("python", "-c", kill).returncode == 0
    started = time.monotonic()
    while limited.inspect("{{.State.Running}}") == "true":
        assert time.monotonic() - started < 30, "the container still runs 30 s after its frontend was killed"
        time.sleep(0.5)
    container_figures["frontend_killed_exit_s"] = round(time.monotonic() - started, 1)
    assert int(limited.inspect("{{.State.ExitCode}}")) != 0
