"""One TorchServe request (a dict of body, form fields and query parameters), parsed once.

`parse_request` reads the request a single time into a `ParsedRequest`: its protocol, its
image bytes, its top-k and its id. Everything after it (decoding, the answer's shape, an error's
shape) reads that value, never the raw request again.

Accepted shapes: a raw image body; a multipart upload; base64 text (optionally a data: URL);
JSON {"data"|"image"|"b64": <base64>}; KServe v1 {"instances": [...]} and Open Inference
Protocol v2 {"inputs": [{"datatype": "BYTES", "data": [<base64>]}]}, one image per request.

A KServe v1 request is answered in v1 shape ({"predictions": [...]}) and a v2 request in v2
shape ({"model_name", "id", "outputs": [...]}), by `reply`/`error_reply`, whatever endpoint it
came to: TorchServe's /predictions, /v1/models/{name}:predict or /v2/models/{name}/infer, or
KServe's TorchServe runtime in front of them. No TorchServe envelope is needed (the stock
kserve/kservev2 envelopes answer only the first request of a batch).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass
from typing import Literal

from handler.errors import RequestError

Protocol = Literal["plain", "v1", "v2"]

# Keys TorchServe fills from the query string or that carry options, never image bytes.
PARAMETERS = ("topk", "model_name")
TOPK_HEADER = "x-topk"
IMAGE_KEYS = ("body", "data", "file", "image", "b64", "bytes")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """What a request may ask for: the default and highest top-k, and the largest image."""

    topk: int
    num_classes: int
    max_image_bytes: int | None = None


@dataclass(frozen=True)
class ParsedRequest:
    """One request as the rest of the handler sees it.

    `images` is a tuple so that a request may one day carry several; today it holds exactly
    one. A request that cannot be parsed keeps its `error` (and still its protocol and id, so
    the error is answered in the shape its client reads)."""

    protocol: Protocol
    request_id: str | None  # the v2 request's own "id", else TorchServe's request id
    topk: int = 0
    images: tuple[bytes, ...] = ()
    error: RequestError | None = None


def parse_request(
    request: dict, headers: dict[str, str], limits: Limits, request_id: str | None = None
) -> ParsedRequest:
    """Read one request once. Never raises: what is wrong with the request goes in `error`."""
    body = json_body(request)
    kind = protocol_of(body)
    own_id = body.get("id") if body is not None else None
    answer_id = str(own_id) if own_id else request_id
    try:
        k = requested_topk(request, body, headers, limits)
        images = (image_bytes(request, body, limits.max_image_bytes),)
    except RequestError as error:
        return ParsedRequest(kind, answer_id, error=error)
    return ParsedRequest(kind, answer_id, topk=k, images=images)


def json_body(request: dict) -> dict | None:
    """The request's JSON object, also when it came as bytes (a charset in the content type
    keeps TorchServe from parsing it)."""
    body = request.get("body", request.get("data"))
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytes, bytearray, str)) and body[:1] in (b"{", "{"):
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def protocol_of(body: dict | None) -> Protocol:
    """"v1" for a KServe v1 body, "v2" for an Open Inference Protocol v2 body, else "plain"."""
    if body is None:
        return "plain"
    if "inputs" in body:
        return "v2"
    if "instances" in body:
        return "v1"
    return "plain"


def requested_topk(request: dict, body: dict | None, headers: dict[str, str], limits: Limits) -> int:
    """The request's top-k, checked against the number of classes.

    From a query parameter (TorchServe 0.12 passes the query string on /invocations but drops
    it on /predictions), a form field or JSON field "topk", the v2 "parameters", or the X-TopK header.
    """
    raw = request.get("topk")
    if raw is None and body is not None:
        raw = body.get("topk")
        if raw is None and isinstance(body.get("parameters"), dict):  # v2 request parameters
            raw = body["parameters"].get("topk")
    if raw is None:
        raw = next((v for k, v in headers.items() if k.lower() == TOPK_HEADER), None)
    if raw is None:
        return limits.topk
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    n = limits.num_classes
    try:
        k = int(text.strip())
    except ValueError:
        raise RequestError(f"topk must be a whole number from 1 to {n}", 400, "InvalidParameter")
    if not 1 <= k <= n:
        raise RequestError(f"topk must be from 1 to {n}, got {k}", 400, "InvalidParameter")
    return k


def image_bytes(request: dict, body: dict | None, max_bytes: int | None = None) -> bytes:
    """Find the one image in a request, whatever shape it came in; refuse it beyond max_bytes.

    The frontend's own cap (max_request_size) sits above max_bytes, so an oversized image gets
    this worded 413 rather than the frontend's empty one."""
    data = _find_image(request, body)
    if max_bytes is not None and len(data) > max_bytes:
        raise RequestError(
            f"the image is {len(data)} bytes ({len(data) / 2**20:.1f} MiB); the limit is {max_bytes} bytes "
            f"({max_bytes / 2**20:g} MiB)",
            413,
            "ImageTooLarge",
        )
    return data


def _find_image(request: dict, body: dict | None) -> bytes:
    if body is not None:
        return _to_bytes(body)
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


def reply(parsed: ParsedRequest, answer: dict, model: dict) -> dict:
    """The handler's answer ({"predictions": [...], "model": ..., "warning"?}) in the request's protocol.

    v1: {"predictions": [<top-k of the one instance>], ...}; v2: typed outputs "label" (BYTES),
    "index" (INT64) and "probability" (FP32), each of shape [1, k], the same order.
    """
    if parsed.protocol == "v1":
        return {**answer, "predictions": [answer["predictions"]]}
    if parsed.protocol != "v2":
        return answer
    rows = answer["predictions"]
    shape = [1, len(rows)]
    outputs = [
        {"name": "label", "datatype": "BYTES", "shape": shape, "data": [r["label"] for r in rows]},
        {"name": "index", "datatype": "INT64", "shape": shape, "data": [r["index"] for r in rows]},
        {"name": "probability", "datatype": "FP32", "shape": shape, "data": [r["probability"] for r in rows]},
    ]
    response: dict[str, object] = {
        "model_name": model.get("name"),
        "model_version": model.get("version"),
        "id": parsed.request_id or str(uuid.uuid4()),
        "outputs": outputs,
    }
    parameters = {k: v for k, v in (("weights", model.get("weights")), ("warning", answer.get("warning"))) if v}
    if parameters:
        response["parameters"] = parameters
    return response


def error_reply(parsed: ParsedRequest, error: RequestError) -> dict:
    """A refused request's JSON; KServe v1/v2 clients read the reason from "error"."""
    body = error.to_json()
    if parsed.protocol == "plain":
        return body
    return {"error": error.message, **body}
