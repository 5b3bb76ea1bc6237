"""Request shapes to image bytes, and top-k validation, without TorchServe."""

from __future__ import annotations

import base64

import pytest

from handler.errors import RequestError
from handler.payload import image_bytes, requested_topk

IMAGE = b"\xff\xd8\xff\xe0 not really a jpeg"
B64 = base64.b64encode(IMAGE).decode()


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
    assert image_bytes(request_) == IMAGE


@pytest.mark.parametrize(
    "request_, kind",
    [
        ({}, "MissingImage"),
        ({"topk": b"3"}, "MissingImage"),
        ({"body": "not base64 at all!"}, "InvalidBase64"),
        ({"body": {"something": 1}}, "MissingImage"),
        ({"body": {"instances": [{"data": B64}, {"data": B64}]}}, "InvalidRequest"),
    ],
)
def test_bad_requests(request_, kind):
    with pytest.raises(RequestError) as error:
        image_bytes(request_)
    assert error.value.kind == kind and 400 <= error.value.status < 500


@pytest.mark.parametrize("request_", [{"body": IMAGE}, {"body": {"data": B64}}, {"file": IMAGE}])
def test_image_size_limit_counts_image_bytes_and_names_the_limit(request_):
    assert image_bytes(request_, max_bytes=len(IMAGE)) == IMAGE
    with pytest.raises(RequestError) as error:
        image_bytes(request_, max_bytes=len(IMAGE) - 1)
    assert error.value.status == 413 and error.value.kind == "ImageTooLarge"
    assert f"the image is {len(IMAGE)} bytes" in error.value.message
    assert f"the limit is {len(IMAGE) - 1} bytes" in error.value.message


def test_topk_sources_and_default():
    assert requested_topk({}, {}, 3, 1000) == 3
    assert requested_topk({"topk": b"5"}, {}, 3, 1000) == 5
    assert requested_topk({"body": {"topk": 7}}, {}, 3, 1000) == 7
    assert requested_topk({}, {"X-TopK": "9"}, 3, 1000) == 9
    assert requested_topk({}, {"x-topk": "1000"}, 3, 1000) == 1000


@pytest.mark.parametrize("value", [b"0", b"-1", b"abc", b"1001", b"2.5", b""])
def test_topk_out_of_range(value):
    with pytest.raises(RequestError) as error:
        requested_topk({"topk": value}, {}, 3, 1000)
    assert error.value.status == 400 and "1000" in error.value.message
