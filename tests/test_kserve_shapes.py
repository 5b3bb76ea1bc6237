"""KServe v1 / Open Inference Protocol v2 request shapes (handler/request.py) and the answers
and errors shaped for them (handler/answer.py), with one image or several."""

from __future__ import annotations

import base64
import json

import pytest

from handler.answer import error_reply, reply
from handler.errors import RequestError, Result
from handler.request import Limits, ParsedRequest, parse_request

IMAGE = b"\x89PNG\r\n\x1a\n not really a png"
B64 = base64.b64encode(IMAGE).decode()
V1 = {"instances": [{"data": B64}]}
V2 = {"id": "req-1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64]}]}
TOP2 = [
    {"label": "tabby", "index": 281, "probability": 0.5},
    {"label": "tiger cat", "index": 282, "probability": 0.25},
]
MODEL = {
    "name": "resnet18",
    "version": "1.0",
    "weights": "IMAGENET1K_V1",
    "runtime": "onnxruntime",
    "precision": "fp32",
}
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
        {"inputs": [V2["inputs"][0], V2["inputs"][0]]},  # the images go in one input, not several
        {"inputs": [{"name": "image", "shape": [0], "datatype": "BYTES", "data": []}]},
        {"instances": []},
    ],
)
def test_kserve_request_without_exactly_one_image_input_is_refused(body):
    parsed = parse({"body": body})
    assert isinstance(parsed.error, RequestError) and parsed.error.status == 400 and parsed.images == ()


OTHER = b"\xff\xd8\xff another image"
B64_OTHER = base64.b64encode(OTHER).decode()


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [B64, {"data": B64_OTHER}, {"b64": B64}]},
        {"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": [B64, B64_OTHER, B64]}]},
        {"inputs": [{"name": "image", "shape": [3, 1], "datatype": "BYTES", "data": [[B64], [B64_OTHER], [B64]]}]},
    ],
)
def test_several_images_per_kserve_request_in_order(body):
    parsed = parse({"body": body})
    assert parsed.error is None and parsed.several and parsed.images == (IMAGE, OTHER, IMAGE)


def test_one_bad_instance_keeps_its_own_error_and_the_others_their_bytes():
    parsed = parse({"body": {"instances": [B64, "@@@", {"nothing": 1}, B64_OTHER]}})
    assert parsed.error is None and len(parsed.sent) == 4 and parsed.images == (IMAGE, OTHER)
    assert parsed.sent[0].value == IMAGE and parsed.sent[3].value == OTHER
    assert parsed.sent[1].error.kind == "InvalidBase64" and parsed.sent[2].error.kind == "MissingImage"


def test_images_per_request_are_capped_with_a_413():
    limits = Limits(topk=3, num_classes=1000, max_images=2)
    parsed = parse_request({"body": {"instances": [B64] * 3}}, {}, limits)
    assert parsed.error.status == 413 and parsed.error.kind == "TooManyImages" and "limit is 2" in parsed.error.message
    assert parse_request({"body": {"instances": [B64] * 2}}, {}, limits).error is None


def test_topk_from_v2_parameters():
    assert parse({"body": {**V2, "parameters": {"topk": 5}}}).topk == 5
    assert parse({"body": json.dumps({**V1, "topk": 4}).encode()}).topk == 4


def test_plain_answer_of_one_image():
    assert reply(parse({"body": IMAGE}), [Result(TOP2)], MODEL) == {"predictions": TOP2, "model": MODEL}
    assert reply(parse({"body": IMAGE}), [Result(TOP2)], MODEL, "random")["warning"] == "random"


def test_v1_answer_has_one_prediction_per_instance():
    answer = reply(parse({"body": V1}), [Result(TOP2)], MODEL)
    assert answer == {"predictions": [TOP2], "model": MODEL}


def test_v2_answer_shape():
    answer = reply(parse({"body": V2}, "ts-id"), [Result(TOP2)], MODEL, "random")
    assert answer["model_name"] == "resnet18" and answer["model_version"] == "1.0"
    assert answer["id"] == "req-1"  # the request's own id wins over TorchServe's
    assert answer["parameters"] == {"warning": "random", "weights": "IMAGENET1K_V1", "runtime": "onnxruntime",
                                    "precision": "fp32"}
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"] == {"name": "label", "datatype": "BYTES", "shape": [1, 2], "data": ["tabby", "tiger cat"]}
    assert outputs["index"]["datatype"] == "INT64" and outputs["index"]["data"] == [281, 282]
    assert outputs["probability"]["datatype"] == "FP32" and outputs["probability"]["data"] == [0.5, 0.25]
    assert [o["name"] for o in answer["outputs"]] == ["label", "index", "probability"]  # no error output
    without_id = {"inputs": V2["inputs"]}
    assert reply(parse({"body": without_id}, "ts-id"), [Result(TOP2)], MODEL)["id"] == "ts-id"
    assert reply(parse({"body": without_id}), [Result(TOP2)], MODEL)["id"]  # generated


TOP2_OTHER = [{"label": "dog", "index": 5, "probability": 0.75}, {"label": "cat", "index": 4, "probability": 0.125}]
BAD = Result(error=RequestError("not an image", 415, "UnsupportedImage"))
SEVERAL = {"instances": [B64, B64_OTHER, B64]}


def test_several_images_answered_in_order_with_an_error_entry_per_bad_one():
    results = [Result(TOP2), BAD, Result(TOP2_OTHER)]
    v1 = reply(parse({"body": SEVERAL}), results, MODEL)
    bad = {"error": "not an image", "code": 415, "type": "UnsupportedImage"}
    assert v1["predictions"] == [TOP2, bad, TOP2_OTHER] and v1["model"] == MODEL
    plain = reply(parse({"file1": IMAGE, "file2": OTHER, "file3": IMAGE}), results, MODEL)
    assert plain["results"] == [{"predictions": TOP2}, bad, {"predictions": TOP2_OTHER}] and plain["model"] == MODEL


def test_v2_answer_of_several_images_is_n_by_k_with_an_error_output():
    v2 = {"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": [B64, B64_OTHER, B64]}]}
    answer = reply(parse({"body": v2}), [Result(TOP2), BAD, Result(TOP2_OTHER)], MODEL)
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert all(outputs[name]["shape"] == [3, 2] for name in ("label", "index", "probability"))
    assert outputs["label"]["data"] == ["tabby", "tiger cat", "", "", "dog", "cat"]
    assert outputs["index"]["data"] == [281, 282, -1, -1, 5, 4]
    assert outputs["probability"]["data"] == [0.5, 0.25, 0.0, 0.0, 0.75, 0.125]
    assert outputs["error"] == {"name": "error", "datatype": "BYTES", "shape": [3], "data": ["", "not an image", ""]}


def test_error_reply():
    error = RequestError("bad", 400, "InvalidRequest")
    model = {"name": "resnet18", "version": "1.0"}
    assert error_reply(parse({"body": IMAGE}), error, model) == error.to_json()
    v2 = error_reply(parse({"body": V2}), error, model)
    assert v2["error"] == "bad" and v2["code"] == 400
    # A whole v2 answer too: TorchServe's OIP gRPC service needs these keys in every answer.
    assert (v2["model_name"], v2["model_version"]) == ("resnet18", "1.0") and v2["id"]
    assert v2["outputs"] == [{"name": "error", "datatype": "BYTES", "shape": [1], "data": ["bad"]}]
    assert error_reply(parse({"body": V1}), error, model)["code"] == 400
