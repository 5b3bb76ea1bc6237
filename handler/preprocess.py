"""RGB picture to the model's input tensor, exactly as torchvision's weights.transforms() does it."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from handler.model_card import Preprocessing


def to_tensor(image: Image.Image, spec: Preprocessing) -> torch.Tensor:
    """Same ops, same order as torchvision's ImageClassification on a PIL image, so results are bit-equal:
    resize and crop in PIL (antialiased), then to a float tensor and normalize."""
    image = F.resize(image, [spec.resize], interpolation=InterpolationMode(spec.interpolation), antialias=True)
    image = F.center_crop(image, [spec.crop])
    tensor = F.convert_image_dtype(F.pil_to_tensor(image), torch.float)
    return F.normalize(tensor, mean=list(spec.mean), std=list(spec.std))
