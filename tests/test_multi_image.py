"""Several images in one request, through the real TorchServe (KServe v1, v2, multipart) and the
handler in process: one answer per image in order, a bad image's own error entry, the cap."""

from __future__ import annotations

import base64

import pytest
import requests

from handler import torchserve_handler
from service.photos import photos
from tests.conftest import MODEL, SERVED
from tests.test_handler import load_handler, run_batch

BROKEN = b"this is not an image"


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [path.read_bytes() for path in photos().values()][:3]


@pytest.fixture(scope="module")
def alone(client, images) -> list[list[dict]]:
    """Each image's answer when it is sent on its own."""
    answers = []
    for image in images:
        response = client.predict(MODEL, image)
        assert response.status_code == 200, response.text
        answers.append(response.json()["predictions"])
    return answers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(torchserve, client, path: str, **kwargs) -> requests.Response:
    auth = {"Authorization": f"Bearer {client.keys['inference']}"}
    return requests.post(f"{torchserve.endpoints.inference}{path}", headers=auth, timeout=120, **kwargs)


def same(a: list[dict], b: list[dict]) -> bool:
    return [p["index"] for p in a] == [p["index"] for p in b] and all(
        abs(x["probability"] - y["probability"]) < 1e-4 for x, y in zip(a, b, strict=True)
    )


def test_kserve_v1_instances_answered_in_order_with_an_error_entry(torchserve, client, images, alone):
    body = {"instances": [{"b64": b64(images[0])}, b64(BROKEN), b64(images[1]), "@@not base64@@", b64(images[2])]}
    response = post(torchserve, client, f"/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 5
    assert same(predictions[0], alone[0]) and same(predictions[2], alone[1]) and same(predictions[4], alone[2])
    assert predictions[1]["code"] == 415 and predictions[1]["type"] == "UnsupportedImage" and predictions[1]["error"]
    assert predictions[3]["code"] == 400 and predictions[3]["type"] == "InvalidBase64"


def test_v2_one_bytes_input_of_several_elements(torchserve, client, images, alone):
    data = [b64(images[2]), b64(BROKEN), b64(images[0])]
    body = {"id": "several", "inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": data}]}
    response = post(torchserve, client, f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "several"
    outputs = {o["name"]: o for o in answer["outputs"]}
    k = SERVED.topk
    assert outputs["label"]["shape"] == outputs["index"]["shape"] == outputs["probability"]["shape"] == [3, k]
    assert outputs["index"]["data"][:k] == [p["index"] for p in alone[2]]
    assert outputs["index"]["data"][k : 2 * k] == [-1] * k
    assert outputs["index"]["data"][2 * k :] == [p["index"] for p in alone[0]]
    assert outputs["error"]["shape"] == [3] and outputs["error"]["data"][0] == outputs["error"]["data"][2] == ""
    assert "not a supported image" in outputs["error"]["data"][1]


def test_multipart_files_each_an_image_in_the_order_sent(torchserve, client, images, alone):
    files = [
        ("second", ("b.png", images[1], "image/png")),
        ("broken", ("x.jpg", BROKEN, "image/jpeg")),
        ("first", ("a.jpg", images[0], "image/jpeg")),
    ]
    response = post(torchserve, client, f"/predictions/{MODEL}", files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    results = answer["results"]
    assert len(results) == 3 and answer["model"]["name"] == MODEL
    assert same(results[0]["predictions"], alone[1]) and same(results[2]["predictions"], alone[0])
    assert results[1]["code"] == 415 and results[1]["type"] == "UnsupportedImage"


def test_a_request_none_of_whose_images_can_be_read_fails_with_every_reason(torchserve, client):
    body = {"instances": [b64(BROKEN), "@@"]}
    response = post(torchserve, client, f"/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == 415, response.text
    assert [p["type"] for p in response.json()["predictions"]] == ["UnsupportedImage", "InvalidBase64"]


def test_more_images_than_the_cap_get_a_413_and_the_server_answers_on(torchserve, client, images):
    tiny = b64(min(images, key=len))  # refused from the count alone, before any decoding
    over = SERVED.max_images_per_request + 1
    response = post(torchserve, client, f"/v1/models/{MODEL}:predict", json={"instances": [tiny] * over})
    assert response.status_code == 413, response.text
    assert response.json()["type"] == "TooManyImages"
    assert f"limit is {SERVED.max_images_per_request}" in response.json()["error"]
    assert client.predict(MODEL, images[0]).status_code == 200


def test_the_images_of_a_request_share_one_forward_pass_with_their_batch(model_store, tmp_path, monkeypatch, images):
    """In process: a batch of a one-image request and a three-image request is one forward pass
    of four rows (a request's images are not run one by one); a cap of 2 refuses the second."""
    handler, context = load_handler(model_store, tmp_path / "one", max_images_per_request=4)
    rows: list[int] = []
    original = handler.inference
    monkeypatch.setattr(handler, "inference", lambda inputs: (rows.append(len(inputs)), original(inputs))[1])
    decoded = []
    monkeypatch.setattr(
        torchserve_handler, "decode_for_model",
        lambda *a, _f=torchserve_handler.decode_for_model: decoded.append(1) or _f(*a),
    )
    requests_ = [{"body": images[0]}, {"body": {"instances": [b64(i) for i in images]}}]
    (s0, a0), (s1, a1) = run_batch((handler, context), requests_)
    assert (s0, s1) == (200, 200) and rows == [4] and len(decoded) == 4
    assert same(a1["predictions"][0], a0["predictions"])
    capped = load_handler(model_store, tmp_path / "two", max_images_per_request=2)
    (status, answer), = run_batch(capped, [requests_[1]])
    assert status == 413 and answer["type"] == "TooManyImages"
