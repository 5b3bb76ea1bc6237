"""TorchServe's gRPC inference API (InferenceAPIsService) over the front's HTTP inference door."""

from __future__ import annotations

from handler.request import PARAMETERS
from service.client.grpc_api import stubs
from service.doors.gateway.calls import Call, Method
from service.doors.gateway.upstream import Upstream, model_path

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
# Request parameters sent as input entries, as TorchServe passes them to the handler, and their headers.
HEADERS = {"topk": "X-TopK", "target": "X-Explain-Target"}


class InferenceApi:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.messages, _ = stubs("inference")

    def ping(self, request, context: Call):
        response = self.upstream.ok(context, "inference", "GET", "/ping")
        return self.messages.TorchServeHealthResponse(health=response.text)

    def predictions(self, request, context: Call):
        """One image (an input entry "data", or any one name) as a raw body; several as a multipart
        form, one file each (a protobuf map keeps no order: name them and read the answer by position
        of the names as sent, or use OIP's ModelInfer for an ordered list)."""
        headers = {HEADERS[k]: v.decode(errors="replace") for k, v in request.input.items() if k in HEADERS}
        images = {k: v for k, v in request.input.items() if k not in PARAMETERS}
        path = model_path("/predictions", request.model_name, request.model_version)
        if len(images) == 1:
            headers["Content-Type"] = "application/octet-stream"
            response = self.upstream.ok(context, "inference", "POST", path, headers=headers,
                                        data=next(iter(images.values())))
        else:
            files = [(name, (name, data, "application/octet-stream")) for name, data in images.items()]
            response = self.upstream.ok(context, "inference", "POST", path, headers=headers, files=files)
        return self.messages.PredictionResponse(prediction=response.content)

    def methods(self) -> dict[str, Method]:
        from google.protobuf import empty_pb2

        m = self.messages
        return {
            f"/{SERVICE}/Ping": Method(self.ping, empty_pb2.Empty, m.TorchServeHealthResponse),
            f"/{SERVICE}/Predictions": Method(self.predictions, m.PredictionsRequest, m.PredictionResponse),
        }
