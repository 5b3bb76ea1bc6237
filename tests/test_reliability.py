"""Hostile uploads, content types, size limit and overload against a real TorchServe (batchSize 4).

Figures go to test-output/ (reliability-corpus.json, soak.json) for docs/RELIABILITY.md.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from service.bench.soak import SoakPlan, soak
from service.client.api import Settings
from service.photos import grace_hopper, photos
from service.properties import read_properties
from tests.conftest import MODEL, ROOT, SERVED
from tests.test_images import Case, bad_inputs, good_inputs
from tests.test_server import assert_same_predictions, expected_predictions
from ui.logic import classify

pytestmark = pytest.mark.server


def worker_pids(client) -> set[int]:
    return {w["pid"] for v in client.describe_model(MODEL).json() for w in v["workers"] if w["status"] == "READY"}


def send(torchserve, client, case: Case) -> requests.Response:
    url = f"{torchserve.endpoints.inference}/predictions/{MODEL}"
    auth = {"Authorization": f"Bearer {client.keys['inference']}"}
    if case.multipart is not None:
        return requests.post(url, files={k: (None, v) for k, v in case.multipart.items()}, headers=auth, timeout=60)
    return requests.post(url, data=case.body, headers={**auth, "Content-Type": case.content_type}, timeout=60)


def never_echoes(body: bytes, message: str) -> bool:
    text = body.decode("latin-1")
    return not any(text[i : i + 8] in message for i in range(0, max(0, len(text) - 8), 8) if text[i : i + 8].strip())


def test_hostile_corpus_interleaved_with_good_images(torchserve, client, local_model, output_dir):
    """Every case shares batches with good photos; each gets its own answer; no worker dies."""
    pids = worker_pids(client)
    photo = grace_hopper().read_bytes()
    good_photo = Case("good photo", photo, "image/jpeg", 200)
    cases = [*bad_inputs(), *good_inputs()]
    sequence = [c for case in cases for c in (case, good_photo)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda c: send(torchserve, client, c), sequence))

    record = []
    for case, response in zip(sequence, responses, strict=True):
        answer = response.json()
        assert response.status_code == case.status, (case.name, response.status_code, response.text[:300])
        if case.status == 200:
            assert answer["predictions"], case.name
            if case is good_photo:
                assert_same_predictions(answer["predictions"], expected_predictions(local_model, photo))
            elif case.content_type.startswith("image/"):
                assert_same_predictions(answer["predictions"], expected_predictions(local_model, case.body))
        else:
            assert answer["code"] == case.status and answer["type"] == case.kind, (case.name, answer)
            assert never_echoes(case.body, answer["message"]), case.name
        if case is not good_photo:
            record.append({"input": case.name, "bytes": len(case.body), "status": response.status_code,
                           "answer": answer if case.status != 200 else "predictions"})
    assert worker_pids(client) == pids, "a worker was replaced while serving the corpus"
    (output_dir / "reliability-corpus.json").write_text(json.dumps(record, indent=1) + "\n")


@pytest.mark.parametrize("k", ["0", "-3", "abc", "1001"])
def test_bad_topk_on_invocations_query_and_header(torchserve, client, k):
    data = grace_hopper().read_bytes()
    auth = {"Authorization": f"Bearer {client.keys['inference']}", "Content-Type": "image/jpeg"}
    base = torchserve.endpoints.inference
    query = requests.post(f"{base}/invocations?model_name={MODEL}&topk={k}", data=data, headers=auth, timeout=60)
    header = requests.post(f"{base}/predictions/{MODEL}", data=data, headers={**auth, "X-TopK": k}, timeout=60)
    for response in (query, header):
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "InvalidParameter" and "1 to 1000" in response.json()["message"]


def test_upload_over_the_size_limit_is_a_413_that_names_the_limit(torchserve, client):
    """An image over the handler's max_image_bytes gets a 413 JSON answer with the limit in it, raw
    or base64 (the frontend's max_request_size leaves room for base64's 4/3). Only a body over the
    frontend's cap gets Netty's bare 413 with an empty body (TorchServe cannot word that one)."""
    limit = SERVED.max_image_bytes
    frontend_cap = int(read_properties(torchserve.config_file)["max_request_size"])
    assert frontend_cap >= limit * 4 // 3 + 2**20, "a base64 image at the limit must reach the handler"
    url = f"{torchserve.endpoints.inference}/predictions/{MODEL}"
    auth = {"Authorization": f"Bearer {client.keys['inference']}"}
    jpeg = {**auth, "Content-Type": "image/jpeg"}
    too_big = b"\xff" * (limit + 1)
    as_json = json.dumps({"data": base64.b64encode(too_big).decode()}).encode()
    for body, headers in ((too_big, jpeg), (as_json, {**auth, "Content-Type": "application/json"})):
        response = requests.post(url, data=body, headers=headers, timeout=120)
        assert response.status_code == 413, response.text
        answer = response.json()
        assert answer["type"] == "ImageTooLarge" and f"the limit is {limit} bytes (30 MiB)" in answer["message"]
    response = requests.post(url, data=b"\xff" * (frontend_cap + 1), headers=jpeg, timeout=120)
    assert response.status_code == 413 and response.content == b""
    # At the limit, the handler looks at the image itself.
    response = requests.post(url, data=b"\xff" * limit, headers=jpeg, timeout=120)
    assert response.status_code == 415 and response.json()["type"] == "UnsupportedImage"
    assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200


def test_form_urlencoded_gets_a_500_from_the_frontend_and_our_clients_never_send_it(torchserve, client):
    """curl --data-binary without -H sends application/x-www-form-urlencoded: TorchServe's frontend
    tries to parse the photo as a form and fails with a 500 before the handler runs. Our client and
    the UI (which sends through it) get 200 whatever the file is called, so they never send that type."""
    url = f"{torchserve.endpoints.inference}/predictions/{MODEL}"
    auth = {"Authorization": f"Bearer {client.keys['inference']}"}
    data = grace_hopper().read_bytes()
    response = requests.post(url, data=data, headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
                             timeout=60)
    assert response.status_code == 500
    settings = Settings(torchserve.endpoints, key_file=torchserve.key_file)
    for filename in ("photo.jpg", "photo.png", "photo.heic", "photo", "notes.txt", "form.x-www-form-urlencoded"):
        assert client.predict(MODEL, data, filename=filename).status_code == 200, filename
        outcome = classify(client, settings, data, filename, SERVED.topk)
        assert outcome.ok and len(outcome.predictions) == SERVED.topk, (filename, outcome.error)


def test_readme_curl_examples(torchserve, tmp_path):
    """docs/curl-examples.sh holds the curl commands of the README and docs/API.md; run them as they are."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(grace_hopper().read_bytes())
    env = {**os.environ, "KEY_FILE": str(torchserve.key_file), "URL": torchserve.endpoints.inference,
           "PHOTO": str(photo)}
    result = subprocess.run(["bash", str(ROOT / "docs" / "curl-examples.sh")], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [len(a["predictions"]) for a in answers] == [SERVED.topk, 5, 5, SERVED.topk, SERVED.topk]
    assert len({a["predictions"][0]["label"] for a in answers}) == 1
    [explained] = answers[-1]["explanations"]  # the explanation example
    assert explained["target"]["label"] == answers[-1]["predictions"][0]["label"] and explained["overlay_png"]


def test_overload_soak_sheds_with_503_and_recovers(torchserve, client, local_model, output_dir):
    """About twice the measured capacity: all answered (200 or a fast 503), same workers, latency back,
    and the photos' answers exactly right after it."""
    duration = float(os.environ.get("SOAK_SECONDS", "20"))
    plan = SoakPlan(duration=duration, factor=2.0, measure=6, clients=4, timeout=60)
    figures = soak(client, grace_hopper().read_bytes(), plan, MODEL)
    (output_dir / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    overload = figures["overload"]
    assert overload["unanswered"] == 0 and overload["requests"] == overload["sent"]
    assert set(overload["statuses"]) <= {"200", "503"}, overload["statuses"]
    assert overload["statuses"].get("503", 0) > 0, "2x capacity never filled the queue"
    assert overload["latency_503_ms"]["p50"] < 500, "load is not shed fast"
    assert figures["workers_unchanged"]
    assert figures["recovery"]["statuses"] == {"200": figures["recovery"]["requests"]}
    single = figures["single_client"]["latency_200_ms"]["p50"]
    assert figures["recovery"]["latency_200_ms"]["p50"] < max(3 * single, 1500)
    before, after = figures["workers_before"], figures["workers_after"]
    for pid, rss in before.items():
        assert after[pid] < rss * 1.5 + 100, f"worker {pid} memory grew from {rss} to {after[pid]} MiB"
    for path in list(photos().values())[:2]:
        data = Path(path).read_bytes()
        response = client.predict(MODEL, data, filename=Path(path).name)
        assert response.status_code == 200
        assert_same_predictions(response.json()["predictions"], expected_predictions(local_model, data))
