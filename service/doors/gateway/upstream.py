"""The gateway's way to the front: one HTTP session per thread, the caller's key passed along."""

from __future__ import annotations

import threading

import requests

from service.doors.gateway.calls import Call
from service.doors.gateway.status import refuse, refuse_unreachable

DEFAULT_TIMEOUT = 120.0


class Upstream:
    """The front's HTTP doors (`urls`: door name -> base URL, e.g. "inference" -> http://127.0.0.1:8080)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = {door: url.rstrip("/") for door, url in urls.items()}
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def call(self, context: Call, door: str, method: str, path: str,
             headers: dict[str, str] | None = None, **kwargs: object) -> requests.Response:
        """The same call over HTTP, with the gRPC call's key and deadline; unreachable = UNAVAILABLE."""
        headers = dict(headers or {})
        for key, value in context.invocation_metadata():
            if key == "authorization":
                headers["Authorization"] = value
        remaining = context.time_remaining()
        timeout = DEFAULT_TIMEOUT if remaining is None else max(0.1, min(remaining, DEFAULT_TIMEOUT))
        try:
            return self.session.request(method, self.urls[door] + path, headers=headers, timeout=timeout, **kwargs)
        except requests.RequestException as error:
            refuse_unreachable(context, error)
            raise  # not reached: abort raises

    def ok(self, context: Call, door: str, method: str, path: str, **kwargs: object
           ) -> requests.Response:
        """call(), and any answer but 200 ends the gRPC call with its status."""
        response = self.call(context, door, method, path, **kwargs)
        if response.status_code != 200:
            refuse(context, response)
        return response


def model_path(prefix: str, model: str, version: str = "") -> str:
    return f"{prefix}/{model}/{version}" if version else f"{prefix}/{model}"
