"""Image bytes to the model's input tensor: decode, then exactly what torchvision's weights.transforms() does.

Two steps, each written once: `decode_for_model` (bytes to upright RGB, with the JPEG draft rule
below) and `to_tensor` (resize, crop, normalise). The handler calls them one after the other, to
time each stage; the explanation's overlay decodes with `decode_for_model` too; `model_input`
chains them for the code that wants bytes to tensor in one call (fine-tuning, the benchmark, tests).

Written with Pillow and torch alone, op for op as torchvision's functional transforms do it on a
PIL image (tests/test_preprocess.py checks bit-equality with torchvision): importing torchvision
costs each worker about 165 MiB of private memory (docs/RELIABILITY.md, memory budget).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

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


# torchvision's InterpolationMode values (as stored in preprocessing.json) to Pillow's filters.
PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """torchvision's resize([shorter]): the shorter side becomes `shorter`, the longer one scales (truncated)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def to_tensor(image: Image.Image, spec: Preprocessing) -> torch.Tensor:
    """Same ops, same order as torchvision's ImageClassification on a PIL image, so results are bit-equal:
    resize and crop in PIL (antialiased), then to a float tensor in [0, 1] and normalize."""
    size = resized_size(image.width, image.height, spec.resize)
    if size != image.size:
        image = image.resize(size, PIL_FILTERS[spec.interpolation])
    left = int(round((image.width - spec.crop) / 2.0))
    top = int(round((image.height - spec.crop) / 2.0))
    image = image.crop((left, top, left + spec.crop, top + spec.crop))
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    tensor = tensor.to(torch.float) / 255.0
    mean = torch.as_tensor(spec.mean, dtype=torch.float).view(-1, 1, 1)
    std = torch.as_tensor(spec.std, dtype=torch.float).view(-1, 1, 1)
    return tensor.sub_(mean).div_(std)
