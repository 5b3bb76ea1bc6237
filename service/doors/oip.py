"""Open Inference Protocol model metadata and readiness, which TorchServe 0.12 does not serve over HTTP.

With `ts_open_inference_protocol=true` TorchServe answers /v2, /v2/health/live, /v2/health/ready and
/v2/models/{m}/infer, but not GET /v2/models/{m}[/versions/{v}] (metadata) nor .../ready, and real OIP
clients (tritonclient, KServe's) check those before they infer. The front (service/doors/front.py) sends
those two paths here. The caller's token is checked by TorchServe itself (the request's Authorization
header is passed to its inference port's /ping, token-checked like every inference call), readiness
and versions come from the management API, and the tensors are declared as the handler takes and
answers them (handler/answer.py).
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from handler.answer import V2_ERROR_OUTPUT, V2_OUTPUTS
from service.client.api import TorchServeClient, is_token_error, ready_workers

PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<ready>/ready)?$")
# One BYTES element per image (raw bytes over gRPC, base64 text over HTTP), as handler/request.py reads them.
INPUTS = [{"name": "image", "datatype": "BYTES", "shape": [-1]}]


def model_metadata(name: str, versions: list[dict]) -> dict:
    """The OIP model metadata of `name` as described by TorchServe (its versions, default first);
    top-k varies per request, so the outputs' second dimension is -1."""
    outputs = [{"name": output, "datatype": datatype, "shape": [-1, -1]} for output, datatype in V2_OUTPUTS]
    outputs.append({"name": V2_ERROR_OUTPUT, "datatype": "BYTES", "shape": [-1]})
    ordered = sorted(versions, key=lambda v: not v.get("isDefault", False))
    return {
        "name": name,
        "versions": [str(v.get("modelVersion")) for v in ordered],
        "platform": "torchserve",
        "inputs": INPUTS,
        "outputs": outputs,
    }


def refusal_message(response: requests.Response) -> str:
    return str(response.json().get("message", response.text))


def version_ready(version: dict) -> bool:
    ready, wanted = ready_workers(version)
    return ready >= wanted


class OipHandler(BaseHTTPRequestHandler):
    server: OipServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        match = PATH.match(self.path.split("?", 1)[0])
        if match is None:
            return self.answer(HTTPStatus.NOT_FOUND, {"error": f"no such OIP path: {self.path}"})
        refused = self.server.token_refusal(self.headers.get("Authorization"))
        if refused is not None:
            return self.answer(refused.status_code, {"error": refusal_message(refused), **refused.json()})
        model, version = match["model"], match["version"]
        described = self.server.management.describe_model(model if not version else f"{model}/{version}")
        if described.status_code != 200:
            named = f"{model} version {version}" if version else model
            return self.answer(HTTPStatus.NOT_FOUND, {"error": f"model {named} is not served here"})
        versions = described.json()
        if match["ready"]:
            ready = any(version_ready(v) for v in versions if version or v.get("isDefault", True))
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return self.answer(status, {"name": model, "ready": ready})
        return self.answer(HTTPStatus.OK, model_metadata(model, versions))

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the front and TorchServe log the traffic."""


class OipServer(ThreadingHTTPServer):
    """Serves OIP metadata and readiness on `address` for the TorchServe that `management` manages;
    `inference_url` is that TorchServe's own inference address (for the token check)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], management: TorchServeClient, inference_url: str,
                 tokens_checked: bool = True) -> None:
        super().__init__(address, OipHandler)
        self.management, self.inference_url, self.tokens_checked = management, inference_url, tokens_checked
        self.thread: threading.Thread | None = None

    @property
    def host_port(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def token_refusal(self, authorization: str | None) -> requests.Response | None:
        """TorchServe's own answer when it refuses this Authorization header, None when it accepts it
        (/ping's other answers, such as 500 while a model is unhealthy, are not about the token)."""
        if not self.tokens_checked:
            return None
        headers = {"Authorization": authorization} if authorization else {}
        response = requests.get(f"{self.inference_url}/ping", headers=headers, timeout=10)
        return response if is_token_error(response) else None

    def start(self) -> OipServer:
        self.thread = threading.Thread(target=self.serve_forever, name="oip-metadata", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
