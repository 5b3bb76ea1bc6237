"""A burst of maximum-size uploads over HTTP is answered, never reset, and the frontend lives (no container).

The same doors (service/local/fronted.py: the nginx front, the gRPC gateway) and JVM settings
(service/doors/budget.py) as the container image, before a real TorchServe; tests/test_doors.py does
the same over gRPC. tests/container/ repeats both under the pod's memory limit with the image itself.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from service.doors.budget import BUDGET
from service.local.fronted import FrontedTorchServe
from service.photos import grace_hopper
from service.processes import group_members
from tests.conftest import MODEL
from tests.test_doors import SpoolWatch

pytestmark = pytest.mark.server
BURST = 24


@pytest.fixture(scope="module")
def fronted(model_store, tmp_path_factory):
    """TorchServe with the budget's JVM flags, behind its doors: (TorchServe, the front)."""
    with FrontedTorchServe.on_free_ports(tmp_path_factory.mktemp("burst"), model_store, vmargs=BUDGET.vmargs) as s:
        yield s.server, s.front


def java_of(server) -> psutil.Process:
    return next(p for p in group_members(server.process.pid) if p.name() == "java")


def send(url: str, body: bytes, key: str | None) -> tuple[str, int | str, str]:
    headers = {"Content-Type": "image/jpeg"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        response = requests.post(f"{url}/predictions/{MODEL}", data=body, headers=headers, timeout=120)
    except requests.RequestException as e:  # a reset, a refused connection, a timeout: never allowed
        return "error", type(e).__name__, str(e)[:200]
    return "answer", response.status_code, response.headers.get("Content-Type", "")


@pytest.mark.parametrize("with_key", [True, False], ids=["valid-key", "no-key"])
def test_burst_of_maximum_size_uploads_is_answered(fronted, with_key):
    server, front = fronted
    java = java_of(server)
    workers = {w["pid"] for w in server.client().describe_model(MODEL).json()[0]["workers"]}
    key = server.client().keys["inference"] if with_key else None
    photo_key = server.client().keys["inference"]
    big = os.urandom(BUDGET.max_request_bytes - 1024)
    photo = grace_hopper().read_bytes()
    with SpoolWatch(front.run_dir) as spooled, ThreadPoolExecutor(BURST + 20) as pool:
        bigs = [pool.submit(send, front.url, big, key) for _ in range(BURST)]
        photos = [pool.submit(send, front.url, photo, photo_key) for _ in range(20)]
        big_results = [f.result() for f in bigs]
        photo_results = [f.result() for f in photos]
    assert spooled.peak <= BUDGET.spool_mib / 2 * 2**20, f"spooled {spooled.peak / 2**20:.0f} MiB at once"
    outcomes = Counter((kind, status) for kind, status, _ in big_results)
    assert all(kind == "answer" for kind, _, _ in big_results), outcomes
    allowed = {413, 503} if with_key else {400, 503}
    assert {status for _, status, _ in big_results} <= allowed, outcomes
    assert all("json" in content_type for _, _, content_type in big_results)
    assert [status for _, status, _ in photo_results] == [200] * 20, Counter(s for _, s, _ in photo_results)
    assert java.is_running() and java_of(server).pid == java.pid, "the frontend was replaced"
    assert {w["pid"] for w in server.client().describe_model(MODEL).json()[0]["workers"]} == workers


def test_a_body_over_the_limit_gets_a_worded_413_from_the_front(fronted):
    _, front = fronted
    response = requests.post(
        f"{front.url}/predictions/{MODEL}", data=b"\0" * (BUDGET.max_request_bytes + 1),
        headers={"Content-Type": "image/jpeg"}, timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["type"] == "RequestTooLarge" and str(BUDGET.max_request_bytes) in response.json()["message"]


def test_the_front_passes_answers_and_errors_through(fronted):
    server, front = fronted
    headers = {"Authorization": f"Bearer {server.client().keys['inference']}", "Content-Type": "image/jpeg"}
    good = requests.post(f"{front.url}/predictions/{MODEL}", data=grace_hopper().read_bytes(), headers=headers)
    assert good.status_code == 200 and good.json()["predictions"]
    bad = requests.post(f"{front.url}/predictions/{MODEL}", data=b"not a picture", headers=headers)
    assert bad.status_code == 415 and bad.json()["type"] == "UnsupportedImage"
