"""HTTP answers as gRPC statuses: what each refusal means to a gRPC client."""

from __future__ import annotations

import json

import grpc
import requests

from service.client.api import is_token_error
from service.doors.gateway.calls import Call

# A gRPC client retries RESOURCE_EXHAUSTED and UNAVAILABLE on its own terms; a busy front (503) and a
# too-large body (413) are RESOURCE_EXHAUSTED, as gRPC itself answers an over-size message.
BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.RESOURCE_EXHAUSTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status(response: requests.Response) -> grpc.StatusCode:
    if is_token_error(response):  # TorchServe's 400 for a missing or wrong key, as its own gRPC says it
        return grpc.StatusCode.PERMISSION_DENIED
    return BY_HTTP_STATUS.get(response.status_code, grpc.StatusCode.UNKNOWN)


def refuse(context: Call, response: requests.Response) -> None:
    """End the call with the HTTP answer's status; the details are its JSON body (code, type, message),
    so a client reads the same reason an HTTP client does."""
    try:
        details = json.dumps(response.json(), separators=(",", ":"))
    except ValueError:
        details = json.dumps({"code": response.status_code, "message": response.text.strip()[:500]})
    context.abort(grpc_status(response), details)


def refuse_unreachable(context: Call, error: requests.RequestException) -> None:
    context.abort(grpc.StatusCode.UNAVAILABLE, json.dumps({"code": 503, "message": f"the server is unreachable: "
                                                           f"{type(error).__name__}"}))
