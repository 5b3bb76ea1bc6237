"""A request parsed once (handler/request.py): request shapes to image bytes, top-k validation,
size limit, without TorchServe."""

from __future__ import annotations

import base64

import pytest

from handler.errors import RequestError, Result
from handler.request import Limits, ParsedRequest, parse_request

IMAGE = b"\xff\xd8\xff\xe0 not really a jpeg"
B64 = base64.b64encode(IMAGE).decode()


def parse(request: dict, headers: dict | None = None, max_bytes: int | None = None) -> ParsedRequest:
    return parse_request(request, headers or {}, Limits(topk=3, num_classes=1000, max_image_bytes=max_bytes))


def image_of(request: dict, max_bytes: int | None = None) -> bytes:
    """The request's one image, or its error raised."""
    parsed = parse(request, max_bytes=max_bytes)
    if parsed.error is not None:
        raise parsed.error
    for image in parsed.sent:  # a request of several: the first image's own error
        if image.error is not None:
            raise image.error
    assert len(parsed.sent) == 1
    return parsed.images[0]


def topk_of(request: dict, headers: dict | None = None) -> int:
    parsed = parse({"body": IMAGE, **request}, headers)
    if parsed.error is not None:
        raise parsed.error
    return parsed.topk


@pytest.mark.parametrize(
    "request_",
    [
        {"body": bytearray(IMAGE)},
        {"data": IMAGE},
        {"file": IMAGE, "topk": b"2"},
        {"photo": IMAGE},  # multipart field under any name
        {"body": B64},
        {"body": "data:image/jpeg;base64," + B64},
        {"body": {"data": B64}},
        {"body": {"instances": [{"data": B64}]}},
        {"body": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64]}]}},
    ],
)
def test_request_shapes(request_):
    assert image_of(request_) == IMAGE


@pytest.mark.parametrize(
    "request_, kind",
    [
        ({}, "MissingImage"),
        ({"topk": b"3"}, "MissingImage"),
        ({"body": "not base64 at all!"}, "InvalidBase64"),
        ({"body": {"something": 1}}, "MissingImage"),
        ({"body": {"instances": [{"data": B64}, {"data": ["x", "y"]}]}}, "InvalidRequest"),  # a list is not one image
    ],
)
def test_bad_requests(request_, kind):
    with pytest.raises(RequestError) as error:
        image_of(request_)
    assert error.value.kind == kind and 400 <= error.value.status < 500


@pytest.mark.parametrize("request_", [{"body": IMAGE}, {"body": {"data": B64}}, {"file": IMAGE}])
def test_image_size_limit_counts_image_bytes_and_names_the_limit(request_):
    assert image_of(request_, max_bytes=len(IMAGE)) == IMAGE
    with pytest.raises(RequestError) as error:
        image_of(request_, max_bytes=len(IMAGE) - 1)
    assert error.value.status == 413 and error.value.kind == "ImageTooLarge"
    assert f"the image is {len(IMAGE)} bytes" in error.value.message
    assert f"the limit is {len(IMAGE) - 1} bytes" in error.value.message


def test_topk_sources_and_default():
    assert topk_of({}) == 3
    assert topk_of({"topk": b"5"}) == 5
    assert parse({"body": {"data": B64, "topk": 7}}).topk == 7
    assert topk_of({}, {"X-TopK": "9"}) == 9
    assert topk_of({}, {"x-topk": "1000"}) == 1000


@pytest.mark.parametrize("value", [b"0", b"-1", b"abc", b"1001", b"2.5", b""])
def test_topk_out_of_range(value):
    with pytest.raises(RequestError) as error:
        topk_of({"topk": value})
    assert error.value.status == 400 and "1000" in error.value.message


def test_a_bad_topk_is_reported_before_a_missing_image():
    """Top-k is checked before the image."""
    assert parse({"topk": b"0"}).error.kind == "InvalidParameter"


def test_a_parsed_request_is_frozen_and_holds_its_images_as_a_tuple():
    parsed = parse({"body": IMAGE})
    assert parsed == ParsedRequest("plain", None, topk=3, sent=(Result(IMAGE),))
    assert parsed.images == (IMAGE,)
    with pytest.raises(AttributeError):
        parsed.topk = 5  # type: ignore[misc]


def test_several_multipart_files_each_an_image_in_the_order_sent():
    """One image per file field (TorchServe keeps one value per field name: distinct names);
    query parameters and the topk field are not images."""
    parsed = parse({"first": IMAGE, "topk": b"2", "second": b"other", "third": bytearray(IMAGE)})
    assert parsed.error is None and parsed.several and parsed.topk == 2
    assert parsed.images == (IMAGE, b"other", IMAGE)


def test_a_raw_body_is_one_image_whatever_else_the_request_carries():
    parsed = parse({"body": IMAGE, "model_name": b"resnet18", "topk": b"1"})
    assert parsed.images == (IMAGE,) and not parsed.several


def test_one_oversized_image_of_several_gets_its_own_413():
    parsed = parse({"a": IMAGE, "b": IMAGE + b"more"}, max_bytes=len(IMAGE))
    assert parsed.error is None and parsed.images == (IMAGE,) and parsed.sent[0].value == IMAGE
    assert parsed.sent[1].error.status == 413 and parsed.sent[1].error.kind == "ImageTooLarge"


def test_a_json_list_of_images():
    parsed = parse({"body": {"data": [B64, B64]}})
    assert parsed.protocol == "plain" and parsed.images == (IMAGE, IMAGE)
