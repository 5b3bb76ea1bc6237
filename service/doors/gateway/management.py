"""TorchServe's gRPC management API (ManagementAPIsService) over the front's HTTP management door.

Each call is the REST call of the same name and answers TorchServe's REST body as `msg`, as TorchServe's
own gRPC management does; a refusal (no key, model API off, unknown model) ends the call with a status.
"""

from __future__ import annotations

from service.client.grpc_api import stubs
from service.doors.gateway.calls import Method
from service.doors.gateway.upstream import Upstream, model_path

SERVICE = "org.pytorch.serve.grpc.management.ManagementAPIsService"
REGISTER_FIELDS = ("url", "model_name", "handler", "runtime", "batch_size", "max_batch_delay", "initial_workers",
                   "response_timeout", "startup_timeout", "synchronous")


def set_fields(request, names: tuple[str, ...]) -> dict[str, object]:
    """The request's fields that were given (proto3 scalars: not their zero value), as query parameters."""
    values = {name: getattr(request, name) for name in names}
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in values.items() if v not in ("", 0, False)}


class ManagementApi:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.m, _ = stubs("management")

    def answer(self, context, method: str, path: str, **kwargs: object):
        response = self.upstream.ok(context, "management", method, path, **kwargs)
        return self.m.ManagementResponse(msg=response.text)

    def describe_model(self, request, context):
        params = {"customized": "true"} if request.customized else None
        return self.answer(context, "GET", model_path("/models", request.model_name, request.model_version),
                           params=params)

    def list_models(self, request, context):
        return self.answer(context, "GET", "/models", params=set_fields(request, ("limit", "next_page_token")))

    def register_model(self, request, context):
        return self.answer(context, "POST", "/models", params=set_fields(request, REGISTER_FIELDS))

    def scale_worker(self, request, context):
        fields = ("min_worker", "max_worker", "number_gpu", "synchronous", "timeout")
        return self.answer(context, "PUT", model_path("/models", request.model_name, request.model_version),
                           params=set_fields(request, fields))

    def set_default(self, request, context):
        path = model_path("/models", request.model_name, request.model_version) + "/set-default"
        return self.answer(context, "PUT", path)

    def unregister_model(self, request, context):
        return self.answer(context, "DELETE", model_path("/models", request.model_name, request.model_version))

    def methods(self) -> dict[str, Method]:
        m = self.m
        calls = {
            "DescribeModel": (self.describe_model, m.DescribeModelRequest),
            "ListModels": (self.list_models, m.ListModelsRequest),
            "RegisterModel": (self.register_model, m.RegisterModelRequest),
            "ScaleWorker": (self.scale_worker, m.ScaleWorkerRequest),
            "SetDefault": (self.set_default, m.SetDefaultRequest),
            "UnregisterModel": (self.unregister_model, m.UnregisterModelRequest),
        }
        return {f"/{SERVICE}/{name}": Method(call, request, m.ManagementResponse)
                for name, (call, request) in calls.items()}
