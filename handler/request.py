"""One TorchServe request (a dict of body, form fields and query parameters), parsed once.

`parse_request` reads the request a single time into a `ParsedRequest`: its protocol, its
images' bytes, its top-k, its id and the class it asks to explain. Everything after it (decoding,
explaining, the answer's shape, an error's shape: handler/answer.py) reads that value, never the
raw request again.

Accepted shapes: a raw image body; a multipart upload (one image per file field); base64 text
(optionally a data: URL); JSON {"data"|"image"|"b64": <base64>}; KServe v1 {"instances": [...]}
and Open Inference Protocol v2 {"inputs": [{"datatype": "BYTES", "data": [<base64>, ...]}]}.

A request may carry several images (v1 instances, the elements of the one v2 input, multipart
file fields, a JSON list), up to `Limits.max_images`. In a request of several, an image that
cannot be read keeps its error as its own Result and the others are answered; in a request of
one image, that image's error is the request's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Literal

from handler.errors import RequestError, Result
from handler.settings import DEFAULTS

Protocol = Literal["plain", "v1", "v2"]

# Where a request names the class to explain (TorchServe's own explain_handle reads "target").
TARGET_KEY = "target"
TARGET_HEADER = "x-explain-target"
# Keys TorchServe fills from the query string or that carry options, never image bytes.
PARAMETERS = ("topk", "model_name", TARGET_KEY)
TOPK_HEADER = "x-topk"
IMAGE_KEYS = ("body", "data", "file", "image", "b64", "bytes")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """What a request may ask for: the default and highest top-k, the largest image, the most images."""

    topk: int
    num_classes: int
    max_image_bytes: int | None = None
    max_images: int = DEFAULTS.max_images_per_request


@dataclass(frozen=True)
class ParsedRequest:
    """One request as the rest of the handler sees it.

    `sent` holds each image sent, in order: its bytes, or the error that image alone caused (only
    in a request of several). A request that cannot be parsed keeps its `error` (with its protocol
    and id, so the error is answered in the shape its client reads)."""

    protocol: Protocol
    request_id: str | None  # the v2 request's own "id", else TorchServe's request id
    topk: int = 0
    sent: tuple[Result[bytes], ...] = ()
    error: RequestError | None = None
    target: str | None = None  # the class an explanation request names (None: the image's top class)

    @property
    def several(self) -> bool:
        """Answered image by image (a list of answers) rather than as one answer."""
        return len(self.sent) > 1

    @property
    def images(self) -> tuple[bytes, ...]:
        """The bytes of the images that could be read, in order."""
        return tuple(image.value for image in self.sent if image.value is not None)


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
        sent = request_images(request, body, limits)
    except RequestError as error:
        return ParsedRequest(kind, answer_id, error=error)
    if len(sent) == 1 and sent[0].error is not None:
        return ParsedRequest(kind, answer_id, error=sent[0].error)
    return ParsedRequest(kind, answer_id, topk=k, sent=sent, target=requested_target(request, body, headers))


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
    text = _option(request, body, headers, "topk", TOPK_HEADER)
    if text is None:
        return limits.topk
    n = limits.num_classes
    try:
        k = int(text.strip())
    except ValueError:
        raise RequestError(f"topk must be a whole number from 1 to {n}", 400, "InvalidParameter")
    if not 1 <= k <= n:
        raise RequestError(f"topk must be from 1 to {n}, got {k}", 400, "InvalidParameter")
    return k


def requested_target(request: dict, body: dict | None, headers: dict[str, str]) -> str | None:
    """The class a request asks to explain, as sent: a form or JSON field "target", the v2 request's
    parameters.target, or the X-Explain-Target header; None means the top class."""
    text = _option(request, body, headers, TARGET_KEY, TARGET_HEADER)
    return (text.strip() or None) if text is not None else None


def _option(request: dict, body: dict | None, headers: dict[str, str], key: str, header: str) -> str | None:
    """One option of the request as text, from the first place that has it: a query parameter or form
    field, a JSON field, the v2 request's "parameters", a header (its name in any case)."""
    raw = request.get(key)
    if raw is None and body is not None:
        raw = body.get(key)
        if raw is None and isinstance(body.get("parameters"), dict):  # v2 request parameters
            raw = body["parameters"].get(key)
    if raw is None:
        raw = next((v for k, v in headers.items() if str(k).lower() == header), None)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)


def request_images(request: dict, body: dict | None, limits: Limits) -> tuple[Result[bytes], ...]:
    """Every image of the request in order, each its bytes or its own error; RequestError for
    what spoils the whole request (no image at all, more than the limit)."""
    values = image_values(request, body)
    if not values:
        raise RequestError(
            "the request has no image: send it as the body or as a multipart file field", 400, "MissingImage"
        )
    if len(values) > limits.max_images:
        raise RequestError(
            f"the request has {len(values)} images; the limit is {limits.max_images} per request",
            413,
            "TooManyImages",
        )
    return tuple(Result.of(_image_bytes, value, limits.max_image_bytes) for value in values)


def image_values(request: dict, body: dict | None) -> list[object]:
    """The request's images as sent (bytes, base64 text, a JSON object holding one), in order."""
    if body is not None:
        return _json_images(body)
    if request.get("body") is not None:  # a raw body: one image
        return [request["body"]]
    # Multipart: every file field, in the order sent (TorchServe keeps one value per field name).
    return [value for key, value in request.items() if key not in PARAMETERS and value is not None]


def _json_images(body: dict) -> list[object]:
    if "instances" in body:  # KServe v1: one image per instance
        instances = body["instances"]
        return instances if isinstance(instances, list) else [instances]
    if "inputs" in body:  # Open Inference Protocol v2: one BYTES input, one element per image
        inputs = body["inputs"]
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise RequestError("v2 request needs exactly one input holding the images", 400, "InvalidRequest")
        data = inputs[0].get("data")
        elements = data if isinstance(data, list) else [data]
        # shape [n, 1] arrives as [[b64], [b64], ...]
        return [e[0] if isinstance(e, list) and len(e) == 1 else e for e in elements if e is not None]
    for key in IMAGE_KEYS:
        if body.get(key) is not None:
            value = body[key]
            return value if isinstance(value, list) else [value]
    raise RequestError(
        'JSON request has no image: use {"data": "<base64>"} or a KServe v1/v2 body', 400, "MissingImage"
    )


def _image_bytes(value: object, max_bytes: int | None) -> bytes:
    return checked_size(_to_bytes(value), max_bytes)


def checked_size(data: bytes, max_bytes: int | None) -> bytes:
    """Refuse one image beyond max_bytes.

    The frontend's own cap (max_request_size) sits above max_bytes, so an oversized image gets
    this worded 413 rather than the frontend's empty one."""
    if max_bytes is not None and len(data) > max_bytes:
        raise RequestError(
            f"the image is {len(data)} bytes ({len(data) / 2**20:.1f} MiB); the limit is {max_bytes} bytes "
            f"({max_bytes / 2**20:g} MiB)",
            413,
            "ImageTooLarge",
        )
    return data


def _to_bytes(value: object) -> bytes:
    """One image as sent: bytes, base64 text, or a JSON object holding one of them."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return _from_base64(value)
    if isinstance(value, dict):
        for key in IMAGE_KEYS:
            if value.get(key) is not None:
                return _to_bytes(value[key])
        raise RequestError('an image entry has no image: use {"data": "<base64>"} or a base64 string', 400,
                           "MissingImage")
    if isinstance(value, list):
        raise RequestError(f"an image entry is a list of {len(value)}, not one image", 400, "InvalidRequest")
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
