"""A gRPC client of TorchServe's inference API, from the protos TorchServe ships in its own jar.

The Python modules are generated from `inference.proto`, `management.proto` and
`open_inference_grpc.proto` inside `ts/frontend/model-server.jar` (the installed torchserve's) into
service/client/grpc_stubs/ on first use (`make setup` does it once); they are not committed, so they always
match the server they talk to. Needs grpcio and grpcio-tools (requirements-dev.txt) and
googleapis-common-protos (for google.rpc.Status).

The project's gRPC doors (service/doors/gateway) answer a refused request with a gRPC status whose details
are the JSON body an HTTP client gets (`refusal` reads it). TorchServe's own gRPC port, which only
loopback reaches, answers such a request with status OK and that JSON as `prediction` instead.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc

STUBS = Path(__file__).resolve().parent / "grpc_stubs"
PACKAGE = "service.client.grpc_stubs"  # STUBS as a module name: the generated code imports itself by it
PROTOS = ("inference.proto", "management.proto", "open_inference_grpc.proto")
IMPORTED_PROTOS = ("google/rpc/status.proto",)


def torchserve_jar() -> Path:
    import ts  # the installed TorchServe (requirements.txt)

    return Path(ts.__file__).resolve().parent / "frontend" / "model-server.jar"


def generate_stubs(target: Path = STUBS) -> Path:
    """Extract the protos from TorchServe's jar and compile them into the package `target`."""
    from grpc_tools import protoc

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(torchserve_jar()) as jar:
        root = Path(scratch)
        package = root.joinpath(*PACKAGE.split("."))  # generated imports read "from service.client.grpc_stubs ..."
        package.mkdir(parents=True)
        for name in PROTOS:
            (package / name).write_bytes(jar.read(f"proto/{name}"))
        for name in IMPORTED_PROTOS:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(jar.read(name))
        include = Path(protoc.__file__).resolve().parent / "_proto"  # google/protobuf/*.proto
        sources = [str(package.relative_to(root) / name) for name in PROTOS]
        args = ["protoc", f"-I{root}", f"-I{include}", f"--python_out={root}", f"--grpc_python_out={root}", *sources]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(PROTOS)} from {torchserve_jar()}")
        for generated in package.glob("*_pb2*.py"):
            shutil.copy(generated, target / generated.name)
    (target / "__init__.py").write_text('"""Generated from TorchServe\'s jar by service/client/grpc_api.py."""\n')
    return target


def stubs(proto: str) -> tuple[ModuleType, ModuleType]:
    """(messages, services) modules of one proto ("inference", "management", "open_inference_grpc")."""
    if not (STUBS / f"{proto}_pb2_grpc.py").is_file():
        generate_stubs()
        importlib.invalidate_caches()
        sys.modules.pop(PACKAGE, None)
    return (importlib.import_module(f"{PACKAGE}.{proto}_pb2"), importlib.import_module(f"{PACKAGE}.{proto}_pb2_grpc"))


@dataclass(frozen=True)
class GrpcAnswer:
    status: int  # the handler's status, read from the JSON ("code"), 200 for an answer
    body: dict


def refusal(error: grpc.RpcError) -> dict:
    """A refused call's reason: the JSON body HTTP answers with ({"code", "type", "message"})."""
    try:
        return json.loads(error.details())
    except (TypeError, ValueError):
        return {"message": error.details()}


def bearer(key: str | None) -> list[tuple[str, str]]:
    """The token as gRPC metadata: TorchServe reads "authorization" as HTTP's header."""
    return [("authorization", f"Bearer {key}")] if key else []


class GrpcClient:
    """TorchServe's own gRPC API (one image a call) and the Open Inference Protocol's (several images a
    call), over one channel. TorchServe's `PredictionsRequest.input` is a protobuf map, which keeps no
    order on the wire, so several images in one call go through OIP's ordered `bytes_contents`."""

    def __init__(self, address: str, key: str | None = None, timeout: float = 60) -> None:
        self.messages, services = stubs("inference")
        self.oip, oip_services = stubs("open_inference_grpc")
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                               ("grpc.max_receive_message_length", -1)])
        self.stub = services.InferenceAPIsServiceStub(self.channel)
        self.oip_stub = oip_services.GRPCInferenceServiceStub(self.channel)
        self.key, self.timeout = key, timeout

    def predict(self, model: str, image: bytes, version: str = "", topk: int | None = None) -> GrpcAnswer:
        """One image, answered as REST's /predictions answers it."""
        inputs = {"data": image, **({"topk": str(topk).encode()} if topk is not None else {})}
        request = self.messages.PredictionsRequest(model_name=model, model_version=version, input=inputs)
        reply = self.stub.Predictions(request, metadata=bearer(self.key), timeout=self.timeout)
        body = json.loads(reply.prediction)
        return GrpcAnswer(int(body.get("code", 200)) if isinstance(body, dict) else 200, body)

    def infer(self, model: str, images: list[bytes], version: str = "") -> dict[str, list]:
        """Several images in one OIP ModelInfer call: {output name: its data}, each output [n, k] flattened
        ("label", "index", "probability"; "error" when an image failed, "" for those answered)."""
        tensor = self.oip.ModelInferRequest.InferInputTensor(
            name="image", datatype="BYTES", shape=[len(images)],
            contents=self.oip.InferTensorContents(bytes_contents=images))
        request = self.oip.ModelInferRequest(model_name=model, model_version=version, inputs=[tensor])
        reply = self.oip_stub.ModelInfer(request, metadata=bearer(self.key), timeout=self.timeout)
        return {output.name: output_data(output) for output in reply.outputs}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def output_data(output) -> list:
    """An OIP output tensor's values (from `contents`, as the gateway answers a request that used them)."""
    contents = output.contents
    if output.datatype == "BYTES":
        return [value.decode() for value in contents.bytes_contents]
    for field in ("int64_contents", "fp32_contents", "int_contents", "fp64_contents", "bool_contents"):
        if getattr(contents, field):
            return list(getattr(contents, field))
    return []


if __name__ == "__main__":
    print(f"generated {generate_stubs()}")
