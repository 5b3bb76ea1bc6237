"""Post-training static int8 quantization of model.onnx with ONNX Runtime's own tooling
(`--runtime onnxruntime --quantize int8`).

The eager path (quantize.py) needs a torchvision architecture with fusable modules; this one works
on any exported graph, so it also fits a TorchScript model of the user's own (`--torchscript`).
Weights are int8 per output channel, activations uint8 with ranges observed on the calibration
photos and augmented crops of them (MinMax), in QDQ form. Per-tensor weights were tried on
EfficientNet-Lite1 and lost half of its top-1 answers; per channel kept about nine in ten.
Imported only for such a build (export.py), so the rest of the builder does not need onnxruntime.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from handler.model_card import Preprocessing
from service.archive.calibration import CalibrationPhotos, calibration_batches


class PhotoReader(CalibrationDataReader):
    """Preprocessed calibration batches, one per photo, as ONNX Runtime's calibrator reads them."""

    def __init__(self, input_name: str, batches: list[torch.Tensor]) -> None:
        self.input_name = input_name
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch.numpy(), dtype=np.float32)}


def quantize_onnx_int8(
    fp32_file: Path, int8_file: Path, preprocessing: Preprocessing, photos: CalibrationPhotos, input_name: str
) -> str:
    """Write the int8 model of `fp32_file` to `int8_file`; returns how it was calibrated, for provenance.json."""
    batches = calibration_batches(preprocessing, photos=photos.paths)
    reader = PhotoReader(input_name, batches)
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_file), str(prepared))  # shape inference and graph folding first, as advised
        quantize_static(
            str(prepared),
            str(int8_file),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    images = sum(len(b) for b in batches)
    return f"onnxruntime post-training static (MinMax, per-channel weights), {images} {photos.what} and crops"
