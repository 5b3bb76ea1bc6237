"""Post-training static int8 quantization of an fp32 torchvision model (x86 quantized engine)."""

from __future__ import annotations

import torch

from handler.model_card import Preprocessing
from service.archive.calibration import CalibrationPhotos, calibration_batches, sample_photos
from service.archive.errors import BuildError

QUANTIZED_ENGINE = "x86"


def quantize_int8(
    model: torch.nn.Module,
    arch: str,
    num_classes: int,
    preprocessing: Preprocessing,
    photos: CalibrationPhotos | None = None,
) -> tuple[torch.nn.Module, str]:
    """Fuse conv+bn+relu, observe activations on calibration images (the photos, default the
    sample photos, and augmented crops of them), convert to int8. Returns the int8 model and
    how it was calibrated, for provenance.json."""
    from torchvision.models import quantization as qmodels

    if not hasattr(qmodels, arch):
        raise BuildError(f"--quantize int8 supports {', '.join(qmodels.__all__)}-style models, not {arch}")
    photos = photos or sample_photos()
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    quantizable = getattr(qmodels, arch)(weights=None, quantize=False, num_classes=num_classes)
    quantizable.load_state_dict(model.state_dict())
    quantizable.eval()
    quantizable.fuse_model(is_qat=False)
    quantizable.qconfig = torch.ao.quantization.get_default_qconfig(QUANTIZED_ENGINE)
    torch.ao.quantization.prepare(quantizable, inplace=True)
    batches = calibration_batches(preprocessing, photos=photos.paths)
    with torch.inference_mode():
        for batch in batches:
            quantizable(batch)
    torch.ao.quantization.convert(quantizable, inplace=True)
    calibration = f"post-training static, {sum(len(b) for b in batches)} {photos.what} and crops"
    return quantizable.eval(), calibration
