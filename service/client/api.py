"""A small client for TorchServe's inference, management and metrics APIs.

Shared by the scripts, the UI and the tests. Tokens are read from the server's key file
(key_file.json in its run directory), so nobody has to copy them around; a token refused
because it expired or the server restarted is re-read from the key file once and retried.
"""

from __future__ import annotations

import json
import mimetypes
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from service.client.upload import shrink_for_upload
from service.names import DEFAULT_KEY_FILE, DEFAULT_MODEL, INFERENCE_URL, MANAGEMENT_URL, METRICS_URL

TOKEN_ERROR = "InvalidKeyException"


@dataclass
class Endpoints:
    inference: str = INFERENCE_URL
    management: str = MANAGEMENT_URL
    metrics: str = METRICS_URL


@dataclass
class Settings:
    """Where a client finds the server, from the environment, with defaults that match `make run`.

    TS_INFERENCE_URL, TS_MANAGEMENT_URL, TS_METRICS_URL, TS_MODEL, TS_KEY_FILE, and
    TS_INFERENCE_KEY for a client that gets only an inference key and no key file.
    """

    endpoints: Endpoints = field(default_factory=Endpoints)
    model: str = DEFAULT_MODEL
    key_file: Path | None = DEFAULT_KEY_FILE
    inference_key: str | None = field(default=None, repr=False)  # repr is a cache key: keep secrets out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = Endpoints()
        endpoints = Endpoints(
            env.get("TS_INFERENCE_URL") or defaults.inference,
            env.get("TS_MANAGEMENT_URL") or defaults.management,
            env.get("TS_METRICS_URL") or defaults.metrics,
        )
        key_file = env.get("TS_KEY_FILE")
        return cls(
            endpoints=endpoints,
            model=env.get("TS_MODEL") or DEFAULT_MODEL,
            key_file=Path(key_file) if key_file else DEFAULT_KEY_FILE,
            inference_key=env.get("TS_INFERENCE_KEY") or None,
        )

    def client(self, timeout: float = 60) -> TorchServeClient:
        keys = {"inference": self.inference_key} if self.inference_key else None
        return TorchServeClient(self.endpoints, key_file=self.key_file, timeout=timeout, keys=keys)


def read_keys(key_file: Path | None) -> dict[str, str]:
    """{"inference": ..., "management": ..., "api": ...} from TorchServe's key_file.json."""
    if key_file is None or not Path(key_file).is_file():
        return {}
    data = json.loads(Path(key_file).read_text())
    return {name.lower(): entry["key"] for name, entry in data.items() if isinstance(entry, dict) and "key" in entry}


def is_token_error(response: requests.Response) -> bool:
    """TorchServe refuses a missing, wrong or expired token with 400 InvalidKeyException (not 401)."""
    return response.status_code == 400 and TOKEN_ERROR in response.text


def ready_workers(version: Mapping) -> tuple[int, int]:
    """(READY workers, workers wanted) of one model version as GET /models/{name} describes it.

    Wanted is minWorkers, at least 1: a model with no worker cannot answer. The server's start,
    the UI, the soak and the container probe all count the same way."""
    ready = sum(w.get("status") == "READY" for w in version.get("workers") or [])
    return ready, max(1, int(version.get("minWorkers") or 0))


def as_uploaded(image: bytes, filename: str, shrink: bool = True) -> tuple[bytes, str]:
    """(bytes, content type) as the client sends a photo: over the upload size (service/client/upload.py)
    it goes as a smaller upright JPEG unless shrink=False, else as it is with its name's content type."""
    image, shrunk = shrink_for_upload(image) if shrink else (image, False)
    return image, "image/jpeg" if shrunk else mimetypes.guess_type(filename)[0] or "application/octet-stream"


class TorchServeClient:
    def __init__(
        self,
        endpoints: Endpoints | None = None,
        key_file: Path | None = None,
        timeout: float = 60,
        keys: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoints = endpoints or Endpoints()
        self.key_file = Path(key_file) if key_file else None
        self.timeout = timeout
        self.session = requests.Session()
        self.keys = {**read_keys(self.key_file), **(keys or {})}
        self._renewing = threading.Lock()  # one renewal at a time: a second would revoke the first's key

    def _call(self, kind: str, method: str, url: str, **kwargs) -> requests.Response:
        for attempt in (1, 2):
            headers = dict(kwargs.pop("headers", None) or {})
            refused = self.keys.get(kind)
            if refused:
                headers["Authorization"] = f"Bearer {refused}"
            response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            if attempt == 1 and is_token_error(response) and self.key_file:
                self._renew_key(kind, refused)
                kwargs["headers"] = headers
                continue
            return response
        return response

    def _renew_key(self, kind: str, refused: str | None) -> None:
        """After a refused key: take the key file's if it differs (server restarted, someone renewed it);
        if the file holds the very key refused, it expired (60 min): ask for a new one with the API key."""
        with self._renewing:
            self._reread_keys()
            if self.keys.get(kind) == refused and kind in ("inference", "management") and self.keys.get("api"):
                self.new_key(kind)

    def new_key(self, kind: str = "inference") -> requests.Response:
        """GET /token?type=inference|management with the API key: TorchServe replaces that key (the old one
        stops working) and rewrites the key file, which is where the new key is read from."""
        response = self.session.get(
            f"{self.endpoints.management}/token",
            params={"type": kind},
            headers={"Authorization": f"Bearer {self.keys.get('api', '')}"},
            timeout=self.timeout,
        )
        if response.ok:
            self._reread_keys()
        return response

    def _reread_keys(self) -> None:
        """Keys from the key file; keep the ones held if it is missing or caught half-written."""
        try:
            fresh = read_keys(self.key_file)
        except (OSError, ValueError):
            fresh = {}
        if fresh:
            self.keys = fresh

    # Inference API
    def ping(self) -> requests.Response:
        return self._call("inference", "GET", f"{self.endpoints.inference}/ping")

    def predict(
        self, model: str, image: bytes, topk: int | None = None, filename: str = "image", shrink: bool = True,
        version: str | None = None,
    ) -> requests.Response:
        """Send the image with its own content type (never form-urlencoded). A photo over the upload
        size (service/client/upload.py) goes as a smaller upright JPEG unless shrink=False. `version`:
        that version of the model (/predictions/{model}/{version}), else its default."""
        image, content_type = as_uploaded(image, filename, shrink)
        headers = {"Content-Type": content_type}
        if topk is not None:
            headers["X-TopK"] = str(topk)
        path = f"{model}/{version}" if version else model
        return self._call(
            "inference", "POST", f"{self.endpoints.inference}/predictions/{path}", data=image, headers=headers
        )

    def predict_many(
        self, model: str, images: Sequence[tuple[str, bytes]], topk: int | None = None, shrink: bool = True
    ) -> requests.Response:
        """Several photos in one multipart request, one file field each, in order (the server answers
        {"results": [...]} in the same order, up to its max_images_per_request; one photo gets the
        one-image answer). Each photo is sent as predict would send it."""
        files = []
        for number, (filename, image) in enumerate(images):
            image, content_type = as_uploaded(image, filename, shrink)
            files.append((f"image{number:03d}", (Path(filename).name or "image", image, content_type)))
        headers = {"X-TopK": str(topk)} if topk is not None else {}
        return self._call(
            "inference", "POST", f"{self.endpoints.inference}/predictions/{model}", files=files, headers=headers
        )

    def explain(
        self, model: str, image: bytes, target: str | None = None, topk: int | None = None, filename: str = "image",
        shrink: bool = True,
    ) -> requests.Response:
        """POST /explanations/{model}: the predictions plus an occlusion map of the top class, or of
        `target` (a label or class index), sent the same way as predict sends the photo."""
        image, content_type = as_uploaded(image, filename, shrink)
        headers = {"Content-Type": content_type}
        if topk is not None:
            headers["X-TopK"] = str(topk)
        if target is not None:
            headers["X-Explain-Target"] = target
        return self._call(
            "inference", "POST", f"{self.endpoints.inference}/explanations/{model}", data=image, headers=headers
        )

    # Management API
    def list_models(self) -> requests.Response:
        return self._call("management", "GET", f"{self.endpoints.management}/models")

    def describe_model(self, model: str, customized: bool = False, version: str | None = None) -> requests.Response:
        """customized: also the handler's own description of each worker (customizedMetadata); version:
        that version, else the default."""
        params = {"customized": "true"} if customized else None
        path = f"{model}/{version}" if version else model
        return self._call("management", "GET", f"{self.endpoints.management}/models/{path}", params=params)

    def scale_workers(self, model: str, min_worker: int, max_worker: int | None = None) -> requests.Response:
        params = {"min_worker": min_worker, "max_worker": max_worker or min_worker, "synchronous": "true"}
        return self._call("management", "PUT", f"{self.endpoints.management}/models/{model}", params=params)

    def describe_versions(self, model: str) -> requests.Response:
        """Every registered version of the model (GET /models/{model}/all)."""
        return self._call("management", "GET", f"{self.endpoints.management}/models/{model}/all")

    def register(self, archive_name: str, initial_workers: int) -> requests.Response:
        """Register an archive of the model store by its bare file name, its workers started before the answer."""
        params = {"url": archive_name, "initial_workers": initial_workers, "synchronous": "true"}
        return self._call("management", "POST", f"{self.endpoints.management}/models", params=params)

    def set_default(self, model: str, version: str) -> requests.Response:
        return self._call("management", "PUT", f"{self.endpoints.management}/models/{model}/{version}/set-default")

    def unregister(self, model: str, version: str) -> requests.Response:
        return self._call("management", "DELETE", f"{self.endpoints.management}/models/{model}/{version}")

    # Metrics API (not token-checked by TorchServe)
    def metrics(self) -> requests.Response:
        return self.session.get(f"{self.endpoints.metrics}/metrics", timeout=self.timeout)
