"""Image bytes to the model's input tensor: decode, then exactly what torchvision's weights.transforms() does.

`model_input` is the one path from bytes to tensor; the handler, the benchmark and the tests
all call it, so the JPEG draft rule below is written once.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from handler.images import decode_image
from handler.model_card import Preprocessing

# JPEGs are decoded with DCT scaling to no less than this many times the resize target on their
# shorter side: then resizing gives (almost) what full decoding gives, for 1/4 to 1/16 of the
# pixels (tests/test_speedups_keep_answers.py bounds the difference).
DRAFT_FACTOR = 2


def draft_side(spec: Preprocessing) -> int:
    """The shorter side a JPEG is decoded to at least, for this preprocessing."""
    return DRAFT_FACTOR * spec.resize


def decode_for_model(data: bytes, spec: Preprocessing, max_pixels: int) -> Image.Image:
    """Decode as the model needs it: upright RGB, JPEGs at no less than `draft_side(spec)`."""
    return decode_image(data, max_pixels, min_side=draft_side(spec))


def model_input(data: bytes, spec: Preprocessing, max_pixels: int) -> torch.Tensor:
    """One image's bytes to its (3, crop, crop) input tensor; RequestError if they are not a usable image."""
    return to_tensor(decode_for_model(data, spec, max_pixels), spec)


def to_tensor(image: Image.Image, spec: Preprocessing) -> torch.Tensor:
    """Same ops, same order as torchvision's ImageClassification on a PIL image, so results are bit-equal:
    resize and crop in PIL (antialiased), then to a float tensor and normalize."""
    image = F.resize(image, [spec.resize], interpolation=InterpolationMode(spec.interpolation), antialias=True)
    image = F.center_crop(image, [spec.crop])
    tensor = F.convert_image_dtype(F.pil_to_tensor(image), torch.float)
    return F.normalize(tensor, mean=list(spec.mean), std=list(spec.std))
