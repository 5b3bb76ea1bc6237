"""Integration tests against a real TorchServe serving a random-weights archive (batchSize 4)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
import torch

from handler.preprocess import model_input
from handler.topk import top_k
from service.client.api import ready_workers
from service.local.torchserve import TorchServe
from service.photos import grace_hopper, photos
from service.processes import running_pid
from tests.conftest import MODEL, SERVED

pytestmark = pytest.mark.server


def expected_predictions(local_model, data: bytes, k: int = SERVED.topk) -> list[dict]:
    """What the archive's own model, run in this process, answers for these bytes."""
    model, card = local_model
    tensor = model_input(data, card.preprocessing, SERVED.max_pixels)
    with torch.inference_mode():
        return top_k(model(tensor[None]), [k], card.labels)[0]


def assert_same_predictions(actual: list[dict], expected: list[dict]) -> None:
    assert [p["index"] for p in actual] == [p["index"] for p in expected]
    assert [p["label"] for p in actual] == [p["label"] for p in expected]
    for a, e in zip(actual, expected, strict=True):
        assert abs(a["probability"] - e["probability"]) < 1e-4


def test_predictions_on_real_photos(client, local_model):
    for name, path in photos().items():
        data = path.read_bytes()
        response = client.predict(MODEL, data, filename=path.name)
        assert response.status_code == 200, (name, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        answer = response.json()
        predictions = answer["predictions"]
        assert len(predictions) == SERVED.topk
        assert [p["probability"] for p in predictions] == sorted((p["probability"] for p in predictions), reverse=True)
        for p in predictions:
            assert 0 <= p["probability"] <= 1 and isinstance(p["label"], str) and 0 <= p["index"] < 1000
        assert_same_predictions(predictions, expected_predictions(local_model, data))
        assert answer["model"]["name"] == MODEL and answer["model"]["version"] == "1.0"
        assert answer["model"]["weights"] == "random(seed=0)" and answer["model"]["random_weights"] is True
        assert "random weights" in answer["warning"]


def test_raw_multipart_and_base64_bodies_agree(torchserve, client):
    data = grace_hopper().read_bytes()
    url = f"{torchserve.endpoints.inference}/predictions/{MODEL}"
    auth = {"Authorization": f"Bearer {client.keys['inference']}"}
    raw = requests.put(url, data=data, headers={**auth, "Content-Type": "image/jpeg"}, timeout=60)
    form = requests.post(url, files={"data": ("photo.jpg", data, "image/jpeg")}, headers=auth, timeout=60)
    b64 = requests.post(url, json={"data": __import__("base64").b64encode(data).decode()}, headers=auth, timeout=60)
    assert raw.status_code == form.status_code == b64.status_code == 200
    assert raw.json()["predictions"] == form.json()["predictions"] == b64.json()["predictions"]


def test_topk_per_request(torchserve, client, local_model):
    data = grace_hopper().read_bytes()
    for k in (1, 5, 1000):
        answer = client.predict(MODEL, data, topk=k, filename="photo.jpg").json()
        assert len(answer["predictions"]) == k
    assert_same_predictions(client.predict(MODEL, data, topk=5, filename="p.jpg").json()["predictions"],
                            expected_predictions(local_model, data, 5))
    # TorchServe 0.12 passes the query string on /invocations (it drops it on /predictions).
    response = requests.post(f"{torchserve.endpoints.inference}/invocations?model_name={MODEL}&topk=2", data=data,
                             headers={"Authorization": f"Bearer {client.keys['inference']}",
                                      "Content-Type": "image/jpeg"}, timeout=60)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 2


@pytest.mark.parametrize("k", ["0", "-2", "three", "1001"])
def test_bad_topk_is_a_400_that_says_the_range(client, k):
    response = client.predict(MODEL, grace_hopper().read_bytes(), topk=k, filename="photo.jpg")
    assert response.status_code == 400
    assert response.json()["type"] == "InvalidParameter" and "1 to 1000" in response.json()["message"]


@pytest.mark.parametrize(
    "body, name, status",
    [
        (b"", "empty.jpg", 400),
        (b"hello, this is text\n", "note.txt", None),
        (b"<html><body>hi</body></html>", "page.html", None),
        (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "doc.pdf", 415),
    ],
)
def test_non_images_get_a_4xx_json_error(client, body, name, status):
    response = client.predict(MODEL, body, filename=name)
    assert 400 <= response.status_code < 500, response.text
    if status:
        assert response.status_code == status
    error = response.json()
    assert set(error) == {"code", "type", "message"} and error["code"] == response.status_code
    assert body[:10].decode(errors="ignore") not in error["message"] or not body


def test_one_broken_image_fails_only_itself_within_a_batch(torchserve, client, local_model):
    good = [p.read_bytes() for p in list(photos().values())[:3]]
    broken = good[0][: len(good[0]) // 2]  # a JPEG cut in half
    log = torchserve.log_dir / "model_log.log"
    for _attempt in range(5):
        before = log.read_text()
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client.predict, MODEL, body, None, "x.jpg") for body in [*good, broken]]
            responses = [f.result() for f in futures]
        for data, response in zip(good, responses[:3], strict=True):
            assert response.status_code == 200, response.text
            assert_same_predictions(response.json()["predictions"], expected_predictions(local_model, data))
        assert responses[3].status_code == 400 and responses[3].json()["type"] == "InvalidImage"
        batches = re.findall(r"batch of (\d+): (\d+) answered, (\d+) refused", log.read_text()[len(before):])
        if any(int(n) > 1 and int(a) >= 1 and int(r) >= 1 for n, a, r in batches):
            return
    pytest.fail(f"the broken image never shared a batch with good ones: {batches}")


def test_scale_workers_up_and_down(client):
    """ready_workers counts what the server's start, the UI and the container probe wait for."""
    def version() -> dict:
        return client.describe_model(MODEL).json()[0]

    assert ready_workers(version()) == (1, 1)
    assert client.scale_workers(MODEL, 2).status_code == 200
    assert ready_workers(version()) == (2, 2)
    assert all(psutil.pid_exists(w["pid"]) for w in version()["workers"])
    assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200
    assert client.scale_workers(MODEL, 1).status_code == 200
    assert ready_workers(version()) == (1, 1)


def test_prometheus_metrics(client):
    def requests_counted() -> float:
        response = client.metrics()
        assert response.status_code == 200 and "text/plain" in response.headers["Content-Type"]
        pattern = rf'^ts_inference_requests_total\{{model_name="{MODEL}".*\}} (\d+\.\d+)$'
        match = re.search(pattern, response.text, re.M)
        return float(match.group(1)) if match else 0.0

    before = requests_counted()
    for _ in range(2):
        assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200
    assert requests_counted() >= before + 2


def test_logs_one_line_per_request_and_one_per_batch(torchserve, client):
    """config/log4j2.xml: an access-log line per request, a model-log line per batch with its
    time, and none of TorchServe's per-request INFO/DEBUG lines in ts_log.log."""
    logs = torchserve.log_dir
    sizes = {name: (logs / name).stat().st_size for name in ("access_log.log", "model_log.log", "ts_log.log")}
    for _ in range(5):
        assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200
    new = {name: (logs / name).read_bytes()[size:].decode(errors="replace") for name, size in sizes.items()}
    assert new["access_log.log"].count(f'"POST /predictions/{MODEL} HTTP/1.1" 200') >= 5
    assert len(re.findall(r"batch of \d+: \d+ answered, \d+ refused in [\d.]+ ms", new["model_log.log"])) >= 1
    for noisy in ("Backend response time", "Sending response for jobId", "Waiting time ns", "[METRICS]"):
        assert noisy not in new["ts_log.log"], noisy


def test_clean_stop_and_restart(model_store, tmp_path):
    server = TorchServe.on_free_ports(tmp_path / "run", model_store)
    server.start()
    server.wait_ready()
    group = psutil.Process(server.process.pid)
    members = [group, *group.children(recursive=True)]
    assert any("java" in p.name() for p in members) and running_pid(server.run_dir) == server.process.pid
    server.stop()
    assert not [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not (server.run_dir / "server.pid").exists()
    server.start()  # no stale state blocks the next start
    try:
        server.wait_ready()
        assert server.client().predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200
    finally:
        server.stop()
