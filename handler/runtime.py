"""The archive's model as one callable, whichever runtime the archive names.

model.pt (TorchScript) is in every archive and is the source of truth; an ONNX Runtime or OpenVINO
archive also carries model.onnx, exported from it and checked against it when it was built
(service/archive/export.py). Every runtime is called the same way: a float (n, 3, crop, crop)
batch in, (n, classes) logits out, on `threads` intra-op threads (handler/cores.py's ThreadPolicy
decides them; TorchScript runs on torch's count, which the policy sets; without `threads` the
others follow torch's count too).

Only the runtime the archive names is imported: a TorchScript worker never loads onnxruntime or
openvino.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from handler.model_card import TORCHSCRIPT, Provenance

ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"
RUNTIMES = (TORCHSCRIPT, ONNXRUNTIME, OPENVINO)
# The Python package each runtime needs (pip names; requirements.txt pins them).
PACKAGES = {ONNXRUNTIME: "onnxruntime", OPENVINO: "openvino"}


class RuntimeMissingError(RuntimeError):
    """The archive names a runtime whose Python package is not installed here."""


class Model(Protocol):
    runtime: str
    precision: str  # what it really runs at (OpenVINO says what it chose)

    def __call__(self, inputs: torch.Tensor, threads: int | None = None) -> torch.Tensor: ...


class TorchScriptModel:
    """model.pt prepared for CPU inference.

    fp32: torch.jit.optimize_for_inference (freeze: weights become constants, batch norm folded
    into convolutions; oneDNN convolutions with prepacked weights), about 15 % faster per image.
    int8: the quantized engine the archive was built for, then freeze.
    """

    runtime = TORCHSCRIPT

    def __init__(self, model_file: Path, provenance: Provenance, optimize: bool = True) -> None:
        engine = provenance.quantized_engine
        if engine:
            torch.backends.quantized.engine = engine
        model = torch.jit.load(str(model_file), map_location="cpu").eval()
        if optimize:
            model = torch.jit.freeze(model) if engine else torch.jit.optimize_for_inference(model)
        self.module = model
        self.precision = provenance.served_precision

    @torch.inference_mode()
    def __call__(self, inputs: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        return self.module(inputs)  # on torch's threads, which the ThreadPolicy sets


def require(runtime: str) -> None:
    """Import the runtime's package, or say which one is missing and how to get it."""
    package = PACKAGES.get(runtime)
    if package is None:
        return
    try:
        __import__(package)
    except ImportError as e:
        raise RuntimeMissingError(
            f"this archive runs on {runtime}, but the Python package {package} is not installed ({e}); "
            f"install it (pip install -r requirements.txt) or build a torchscript archive"
        ) from None


def load_model(model_file: Path, provenance: Provenance, optimize: bool = True) -> Model:
    """The archive's model for the runtime its provenance names; model_file is its model.pt, and the
    exported files sit beside it. `optimize` applies to TorchScript (the other runtimes always
    optimize their graph)."""
    runtime = provenance.served_runtime
    if runtime == TORCHSCRIPT:
        return TorchScriptModel(model_file, provenance, optimize)
    require(runtime)
    if runtime == ONNXRUNTIME:
        from handler.onnx_runtime import OnnxRuntimeModel

        return OnnxRuntimeModel(model_file.parent, provenance)
    if runtime == OPENVINO:
        from handler.openvino_runtime import OpenVinoModel

        return OpenVinoModel(model_file.parent, provenance)
    raise ValueError(f"provenance.json names runtime {runtime!r}; this handler runs {', '.join(RUNTIMES)}")
