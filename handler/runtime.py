"""The archive's model file to a callable model, prepared for CPU inference.

Its own module because the runtime is a choice: TorchScript today; ONNX Runtime or OpenVINO
can sit behind the same `load_model` call.
"""

from __future__ import annotations

from pathlib import Path

import torch

from handler.model_card import Provenance


def load_model(model_file: Path, provenance: Provenance, optimize: bool = True) -> torch.jit.ScriptModule:
    """Load the archive's TorchScript model, prepared for CPU inference.

    fp32: torch.jit.optimize_for_inference (freeze: weights become constants, batch norm folded
    into convolutions; oneDNN convolutions with prepacked weights), about 15 % faster per image.
    int8: the quantized engine the archive was built for, then freeze.
    """
    engine = provenance.quantized_engine
    if engine:
        torch.backends.quantized.engine = engine
    model = torch.jit.load(str(model_file), map_location="cpu").eval()
    if not optimize:
        return model
    if engine:
        return torch.jit.freeze(model)
    return torch.jit.optimize_for_inference(model)
