"""The Open Inference Protocol's gRPC service over the front's HTTP doors (KServe v2 REST).

Served under both names its clients use: KServe's and Triton's `inference.GRPCInferenceService` and
TorchServe's `org.pytorch.serve.grpc.openinference.GRPCInferenceService` (the same messages). Images
come as BYTES elements in `contents.bytes_contents` or in `raw_input_contents` (each element a 4-byte
little-endian length and its bytes, as tritonclient sends them); the answer uses the same form.
"""

from __future__ import annotations

import base64
import struct
import uuid

import grpc
import numpy as np

from service.client.grpc_api import stubs
from service.doors.gateway.calls import Method
from service.doors.gateway.upstream import Upstream, model_path

SERVICES = ("inference.GRPCInferenceService", "org.pytorch.serve.grpc.openinference.GRPCInferenceService")
NUMPY = {"INT64": "<i8", "FP32": "<f4", "INT32": "<i4", "FP64": "<f8"}
CONTENTS = {"INT64": "int64_contents", "FP32": "fp32_contents", "INT32": "int_contents", "FP64": "fp64_contents",
            "BOOL": "bool_contents"}


def split_raw_bytes(raw: bytes) -> list[bytes]:
    """A raw BYTES tensor's elements: each a 4-byte little-endian length, then that many bytes."""
    elements, at = [], 0
    while at + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, at)
        elements.append(raw[at + 4:at + 4 + length])
        at += 4 + length
    return elements


def join_raw_bytes(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def parameter_value(parameter) -> object:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


class OpenInferenceApi:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.m, _ = stubs("open_inference_grpc")

    def server_live(self, request, context):
        self.upstream.ok(context, "inference", "GET", "/v2/health/live")
        return self.m.ServerLiveResponse(live=True)

    def server_ready(self, request, context):
        self.upstream.ok(context, "inference", "GET", "/v2/health/ready")
        return self.m.ServerReadyResponse(ready=True)

    def model_ready(self, request, context):
        path = model_path("/v2/models", request.name, request.version and f"versions/{request.version}")
        response = self.upstream.call(context, "inference", "GET", f"{path}/ready")
        if response.status_code not in (200, 503):
            self.upstream.ok(context, "inference", "GET", f"{path}/ready")  # ends the call with its status
        return self.m.ModelReadyResponse(ready=response.status_code == 200)

    def server_metadata(self, request, context):
        body = self.upstream.ok(context, "inference", "GET", "/v2").json()
        extensions = body.get("extensions") or body.get("extenstion") or []  # TorchServe 0.12 spells it so
        return self.m.ServerMetadataResponse(name=body.get("name", ""), version=body.get("version", ""),
                                             extensions=extensions)

    def model_metadata(self, request, context):
        path = model_path("/v2/models", request.name, request.version and f"versions/{request.version}")
        body = self.upstream.ok(context, "inference", "GET", path).json()
        tensor = self.m.ModelMetadataResponse.TensorMetadata
        return self.m.ModelMetadataResponse(
            name=body["name"], versions=body["versions"], platform=body["platform"],
            inputs=[tensor(**t) for t in body["inputs"]], outputs=[tensor(**t) for t in body["outputs"]])

    def model_infer(self, request, context):
        """The v2 REST body of the same request, sent to the model's /predictions (the handler reads v2
        bodies there as on /v2/models/{m}/infer, and /predictions also takes a version)."""
        raw = list(request.raw_input_contents)
        inputs = []
        for i, tensor in enumerate(request.inputs):
            if tensor.datatype != "BYTES":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input {tensor.name!r}: images are BYTES tensors, "
                              f"one element per encoded image, not {tensor.datatype}")
            elements = list(tensor.contents.bytes_contents) or (split_raw_bytes(raw[i]) if i < len(raw) else [])
            inputs.append({"name": tensor.name, "datatype": "BYTES", "shape": list(tensor.shape),
                           "data": [base64.b64encode(e).decode() for e in elements]})
        body: dict[str, object] = {"id": request.id or str(uuid.uuid4()), "inputs": inputs}
        if request.parameters:
            body["parameters"] = {k: parameter_value(v) for k, v in request.parameters.items()}
        path = model_path("/predictions", request.model_name, request.model_version)
        answer = self.upstream.ok(context, "inference", "POST", path, json=body).json()
        return self.infer_response(answer, raw_form=bool(raw))

    def infer_response(self, answer: dict, raw_form: bool):
        response = self.m.ModelInferResponse(model_name=str(answer.get("model_name") or ""),
                                             model_version=str(answer.get("model_version") or ""),
                                             id=str(answer.get("id") or ""))
        for key, value in (answer.get("parameters") or {}).items():
            response.parameters[key].string_param = str(value)
        for output in answer["outputs"]:
            tensor = response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
            data = output["data"]
            if output["datatype"] == "BYTES":
                encoded = [str(v).encode() for v in data]
                if raw_form:
                    response.raw_output_contents.append(join_raw_bytes(encoded))
                else:
                    tensor.contents.bytes_contents.extend(encoded)
            elif raw_form:
                response.raw_output_contents.append(np.asarray(data, dtype=NUMPY[output["datatype"]]).tobytes())
            else:
                getattr(tensor.contents, CONTENTS[output["datatype"]]).extend(data)
        return response

    def methods(self) -> dict[str, Method]:
        m = self.m
        calls = {
            "ServerLive": Method(self.server_live, m.ServerLiveRequest, m.ServerLiveResponse),
            "ServerReady": Method(self.server_ready, m.ServerReadyRequest, m.ServerReadyResponse),
            "ModelReady": Method(self.model_ready, m.ModelReadyRequest, m.ModelReadyResponse),
            "ServerMetadata": Method(self.server_metadata, m.ServerMetadataRequest, m.ServerMetadataResponse),
            "ModelMetadata": Method(self.model_metadata, m.ModelMetadataRequest, m.ModelMetadataResponse),
            "ModelInfer": Method(self.model_infer, m.ModelInferRequest, m.ModelInferResponse),
        }
        return {f"/{service}/{name}": method for service in SERVICES for name, method in calls.items()}
