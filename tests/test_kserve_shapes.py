"""KServe v1 / Open Inference Protocol v2 request shapes (handler/request.py) and the answers
and errors shaped for them."""

from __future__ import annotations

import base64
import json

import pytest

from handler.errors import RequestError
from handler.request import Limits, ParsedRequest, error_reply, parse_request, reply

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
LIMITS = Limits(topk=3, num_classes=1000)


def parse(request: dict, request_id: str | None = None) -> ParsedRequest:
    return parse_request(request, {}, LIMITS, request_id)


@pytest.mark.parametrize(
    "request_, expected",
    [
        ({"body": V1}, "v1"),
        ({"body": V2}, "v2"),
        ({"body": json.dumps(V2).encode()}, "v2"),  # JSON that TorchServe left as bytes
        ({"data": V1}, "v1"),
        ({"body": {"data": B64}}, "plain"),
        ({"body": IMAGE}, "plain"),
        ({"body": B64}, "plain"),
        ({"file": IMAGE}, "plain"),
        ({"body": {"inputs": []}}, "v2"),  # refused (no image), but still answered in v2 shape
    ],
)
def test_protocol(request_, expected):
    assert parse(request_).protocol == expected


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
    parsed = parse({"body": body})
    assert parsed.error is None and parsed.images == (IMAGE,)


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
    parsed = parse({"body": body})
    assert isinstance(parsed.error, RequestError) and parsed.error.status == 400 and parsed.images == ()


def test_topk_from_v2_parameters():
    assert parse({"body": {**V2, "parameters": {"topk": 5}}}).topk == 5
    assert parse({"body": json.dumps({**V1, "topk": 4}).encode()}).topk == 4


def test_plain_answer_unchanged():
    assert reply(parse({"body": IMAGE}), ANSWER, MODEL) is ANSWER


def test_v1_answer_has_one_prediction_per_instance():
    answer = reply(parse({"body": V1}), ANSWER, MODEL)
    assert answer["predictions"] == [ANSWER["predictions"]]


def test_v2_answer_shape():
    answer = reply(parse({"body": V2}, "ts-id"), {**ANSWER, "warning": "random"}, MODEL)
    assert answer["model_name"] == "resnet18" and answer["model_version"] == "1.0"
    assert answer["id"] == "req-1"  # the request's own id wins over TorchServe's
    assert answer["parameters"]["warning"] == "random"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"] == {"name": "label", "datatype": "BYTES", "shape": [1, 2], "data": ["tabby", "tiger cat"]}
    assert outputs["index"]["datatype"] == "INT64" and outputs["index"]["data"] == [281, 282]
    assert outputs["probability"]["datatype"] == "FP32" and outputs["probability"]["data"] == [0.5, 0.25]
    without_id = {"inputs": V2["inputs"]}
    assert reply(parse({"body": without_id}, "ts-id"), ANSWER, MODEL)["id"] == "ts-id"
    assert reply(parse({"body": without_id}), ANSWER, MODEL)["id"]  # generated


def test_error_reply():
    error = RequestError("bad", 400, "InvalidRequest")
    assert error_reply(parse({"body": IMAGE}), error) == error.to_json()
    assert error_reply(parse({"body": V2}), error)["error"] == "bad"
    assert error_reply(parse({"body": V1}), error)["code"] == 400
