"""A small client for TorchServe's inference, management and metrics APIs.

Shared by the scripts, the UI and the tests. Tokens are read from the server's key file
(key_file.json in its run directory), so nobody has to copy them around; a token refused
because it expired or the server restarted is re-read from the key file once and retried.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import requests

TOKEN_ERROR = "InvalidKeyException"


@dataclass
class Endpoints:
    inference: str = "http://127.0.0.1:8080"
    management: str = "http://127.0.0.1:8081"
    metrics: str = "http://127.0.0.1:8082"


def read_keys(key_file: Path | None) -> dict[str, str]:
    """{"inference": ..., "management": ..., "api": ...} from TorchServe's key_file.json."""
    if key_file is None or not Path(key_file).is_file():
        return {}
    data = json.loads(Path(key_file).read_text())
    return {name.lower(): entry["key"] for name, entry in data.items() if isinstance(entry, dict) and "key" in entry}


class TorchServeClient:
    def __init__(self, endpoints: Endpoints | None = None, key_file: Path | None = None, timeout: float = 60) -> None:
        self.endpoints = endpoints or Endpoints()
        self.key_file = Path(key_file) if key_file else None
        self.timeout = timeout
        self.session = requests.Session()
        self.keys = read_keys(self.key_file)

    def _call(self, kind: str, method: str, url: str, **kwargs) -> requests.Response:
        for attempt in (1, 2):
            headers = dict(kwargs.pop("headers", None) or {})
            if self.keys.get(kind):
                headers["Authorization"] = f"Bearer {self.keys[kind]}"
            response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            if attempt == 1 and response.status_code == 400 and TOKEN_ERROR in response.text and self.key_file:
                self.keys = read_keys(self.key_file)  # server restarted or token expired
                kwargs["headers"] = headers
                continue
            return response
        return response

    # Inference API
    def ping(self) -> requests.Response:
        return self._call("inference", "GET", f"{self.endpoints.inference}/ping")

    def predict(self, model: str, image: bytes, topk: int | None = None, filename: str = "image") -> requests.Response:
        """Send the image as it is, with its own content type (never form-urlencoded)."""
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        headers = {"Content-Type": content_type}
        if topk is not None:
            headers["X-TopK"] = str(topk)
        return self._call(
            "inference", "POST", f"{self.endpoints.inference}/predictions/{model}", data=image, headers=headers
        )

    # Management API
    def list_models(self) -> requests.Response:
        return self._call("management", "GET", f"{self.endpoints.management}/models")

    def describe_model(self, model: str) -> requests.Response:
        return self._call("management", "GET", f"{self.endpoints.management}/models/{model}")

    def scale_workers(self, model: str, min_worker: int, max_worker: int | None = None) -> requests.Response:
        params = {"min_worker": min_worker, "max_worker": max_worker or min_worker, "synchronous": "true"}
        return self._call("management", "PUT", f"{self.endpoints.management}/models/{model}", params=params)

    # Metrics API (not token-checked by TorchServe)
    def metrics(self) -> requests.Response:
        return self.session.get(f"{self.endpoints.metrics}/metrics", timeout=self.timeout)
