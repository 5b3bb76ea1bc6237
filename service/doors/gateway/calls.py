"""One gRPC call as the gateway sees it: its method, its metadata and deadline, its answer or refusal.

The API modules (inference, open_inference, management) read a call through `Call` the way a grpcio
servicer reads its context (invocation_metadata, time_remaining, abort), so they stay plain functions
from a request message to a response message.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import grpc

# grpc-timeout units (gRPC over HTTP/2): hours, minutes, seconds, milli-, micro-, nanoseconds.
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class Refused(Exception):
    """The call ends with this status and message (grpc-status, grpc-message)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


@dataclass(frozen=True)
class Method:
    """A unary method: its function (request message, Call) -> response message, and its messages."""

    function: Callable
    request: type
    response: type


class Call:
    """The request headers of one call and its deadline (from grpc-timeout)."""

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers
        timeout = dict(headers).get("grpc-timeout")
        self.deadline = time.monotonic() + parse_timeout(timeout) if timeout else None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers if not k.startswith(":")]

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Refused(code, details)


def parse_timeout(value: str) -> float:
    try:
        return int(value[:-1]) * TIMEOUT_UNITS[value[-1]]
    except (ValueError, KeyError, IndexError):
        return 120.0


def status_headers(code: grpc.StatusCode, details: str = "") -> list[tuple[str, str]]:
    """grpc-status and grpc-message (percent-encoded, as gRPC over HTTP/2 says)."""
    headers = [("grpc-status", str(code.value[0]))]
    if details:
        headers.append(("grpc-message", urllib.parse.quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
    return headers
