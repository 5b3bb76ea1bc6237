"""One TorchServe request (a dict of body, form fields and query parameters) to image bytes and top-k.

Accepted shapes: a raw image body; a multipart upload; base64 text (optionally a data: URL);
JSON {"data"|"image"|"b64": <base64>}; KServe v1 {"instances": [...]} and Open Inference
Protocol v2 {"inputs": [{"datatype": "BYTES", "data": [<base64>]}]}, one image per request.
"""

from __future__ import annotations

import base64
import binascii
import re

from handler.errors import RequestError

# Keys TorchServe fills from the query string or that carry options, never image bytes.
PARAMETERS = ("topk", "model_name")
TOPK_HEADER = "x-topk"
IMAGE_KEYS = ("body", "data", "file", "image", "b64", "bytes")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


def requested_topk(request: dict, headers: dict[str, str], default: int, num_classes: int) -> int:
    """The request's top-k, checked against the number of classes.

    From a query parameter (TorchServe 0.12 passes the query string on /invocations but drops
    it on /predictions), a form field or JSON field "topk", or the X-TopK header.
    """
    raw = request.get("topk")
    if raw is None and isinstance(request.get("body"), dict):
        raw = request["body"].get("topk")
    if raw is None:
        raw = next((v for k, v in headers.items() if k.lower() == TOPK_HEADER), None)
    if raw is None:
        return default
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    try:
        k = int(text.strip())
    except ValueError:
        raise RequestError(f"topk must be a whole number from 1 to {num_classes}", 400, "InvalidParameter")
    if not 1 <= k <= num_classes:
        raise RequestError(f"topk must be from 1 to {num_classes}, got {k}", 400, "InvalidParameter")
    return k


def image_bytes(request: dict) -> bytes:
    """Find the one image in a request, whatever shape it came in."""
    for key in IMAGE_KEYS:
        if request.get(key) is not None:
            return _to_bytes(request[key])
    for key, value in request.items():  # a multipart field under any other name
        if key not in PARAMETERS and value is not None:
            return _to_bytes(value)
    raise RequestError(
        "the request has no image: send it as the body or as a multipart file field", 400, "MissingImage"
    )


def _to_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return _from_base64(value)
    if isinstance(value, list):
        if len(value) != 1:
            raise RequestError(f"send one image per request, got {len(value)}", 400, "InvalidRequest")
        return _to_bytes(value[0])
    if isinstance(value, dict):
        if "instances" in value:  # KServe v1
            return _to_bytes(value["instances"])
        if "inputs" in value:  # Open Inference Protocol v2
            inputs = value["inputs"]
            if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
                raise RequestError("v2 request needs exactly one input holding the image", 400, "InvalidRequest")
            return _to_bytes(inputs[0].get("data"))
        for key in IMAGE_KEYS:
            if value.get(key) is not None:
                return _to_bytes(value[key])
        raise RequestError(
            'JSON request has no image: use {"data": "<base64>"} or a KServe v1/v2 body', 400, "MissingImage"
        )
    raise RequestError("the request has no image", 400, "MissingImage")


def _from_base64(text: str) -> bytes:
    text = _DATA_URL.sub("", text.strip(), count=1)
    if not text:
        raise RequestError("the request has no image: the body is empty", 400, "MissingImage")
    try:
        padded = "".join(text.split())
        padded += "=" * (-len(padded) % 4)
        if "-" in padded or "_" in padded:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise RequestError("text body is not valid base64 image data", 400, "InvalidBase64")
