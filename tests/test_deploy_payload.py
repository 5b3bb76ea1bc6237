"""KServe v1 / Open Inference Protocol v2 request shapes and the answers shaped for them."""

from __future__ import annotations

import base64
import json

import pytest

from handler.errors import RequestError
from handler.payload import error_reply, image_bytes, protocol, reply, requested_topk

IMAGE = b"\x89PNG\r\n\x1a\n not really a png"
B64 = base64.b64encode(IMAGE).decode()
V1 = {"instances": [{"data": B64}]}
V2 = {"id": "req-1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64]}]}
ANSWER = {
    "predictions": [
        {"label": "tabby", "index": 281, "probability": 0.5},
        {"label": "tiger cat", "index": 282, "probability": 0.25},
    ],
    "model": {"name": "resnet18", "version": "1.0", "weights": "IMAGENET1K_V1"},
}
MODEL = ANSWER["model"]


@pytest.mark.parametrize(
    "request_, expected",
    [
        ({"body": V1}, "v1"),
        ({"body": V2}, "v2"),
        ({"body": json.dumps(V2).encode()}, "v2"),  # JSON that TorchServe left as bytes
        ({"data": V1}, "v1"),
        ({"body": {"data": B64}}, None),
        ({"body": IMAGE}, None),
        ({"body": B64}, None),
        ({"file": IMAGE}, None),
    ],
)
def test_protocol(request_, expected):
    assert protocol(request_) == expected


@pytest.mark.parametrize(
    "body",
    [
        V1,
        V2,
        {"instances": [B64]},
        {"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES", "data": [[B64]]}]},
        json.dumps(V2).encode(),
        json.dumps(V1),
    ],
)
def test_image_from_kserve_bodies(body):
    assert image_bytes({"body": body}) == IMAGE


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": []},
        {"inputs": [V2["inputs"][0], V2["inputs"][0]]},
        {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [B64, B64]}]},
        {"instances": []},
    ],
)
def test_one_image_per_kserve_request(body):
    with pytest.raises(RequestError) as error:
        image_bytes({"body": body})
    assert error.value.status == 400


def test_topk_from_v2_parameters():
    assert requested_topk({"body": {**V2, "parameters": {"topk": 5}}}, {}, 3, 1000) == 5
    assert requested_topk({"body": json.dumps({**V1, "topk": 4}).encode()}, {}, 3, 1000) == 4


def test_plain_answer_unchanged():
    assert reply({"body": IMAGE}, ANSWER, MODEL) is ANSWER


def test_v1_answer_has_one_prediction_per_instance():
    answer = reply({"body": V1}, ANSWER, MODEL)
    assert answer["predictions"] == [ANSWER["predictions"]]


def test_v2_answer_shape():
    answer = reply({"body": V2}, {**ANSWER, "warning": "random"}, MODEL, "ts-id")
    assert answer["model_name"] == "resnet18" and answer["model_version"] == "1.0"
    assert answer["id"] == "req-1"  # the request's own id wins over TorchServe's
    assert answer["parameters"]["warning"] == "random"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"] == {"name": "label", "datatype": "BYTES", "shape": [1, 2], "data": ["tabby", "tiger cat"]}
    assert outputs["index"]["datatype"] == "INT64" and outputs["index"]["data"] == [281, 282]
    assert outputs["probability"]["datatype"] == "FP32" and outputs["probability"]["data"] == [0.5, 0.25]
    without_id = {"inputs": V2["inputs"]}
    assert reply({"body": without_id}, ANSWER, MODEL, "ts-id")["id"] == "ts-id"
    assert reply({"body": without_id}, ANSWER, MODEL)["id"]  # generated


def test_error_reply():
    error = RequestError("bad", 400, "InvalidRequest").to_json()
    assert error_reply({"body": IMAGE}, error) == error
    assert error_reply({"body": V2}, error)["error"] == "bad"
    assert error_reply({"body": V1}, error)["code"] == 400
