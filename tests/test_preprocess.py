"""Preprocessing equals torchvision's ResNet18_Weights.IMAGENET1K_V1.transforms() on real photos."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights

from handler.images import decode_image
from handler.model_card import Preprocessing
from handler.preprocess import model_input, to_tensor
from handler.settings import DEFAULTS
from service.archive.sources import preprocessing_of
from service.names import ROOT
from service.photos import photos

WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


def test_spec_from_weights_is_imagenet_default():
    spec = preprocessing_of(WEIGHTS)
    assert spec == Preprocessing(resize=256, crop=224, interpolation="bilinear")


@pytest.mark.parametrize("name", sorted(photos()))
def test_equals_torchvision_transforms(name):
    path = photos()[name]
    spec = preprocessing_of(WEIGHTS)
    expected = WEIGHTS.transforms()(Image.open(path).convert("RGB"))
    actual = model_input(path.read_bytes(), spec, DEFAULTS.max_pixels)
    assert actual.shape == (3, 224, 224)
    assert torch.equal(actual, expected), f"max diff {(actual - expected).abs().max()}"


def test_non_square_and_portrait_crop_center():
    """A tall image keeps its middle: the crop is centered, not taken from a corner."""
    image = Image.new("RGB", (300, 900), (255, 0, 0))
    image.paste((0, 0, 255), (0, 400, 300, 500))  # a blue band in the middle
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    spec = Preprocessing()
    tensor = to_tensor(decode_image(buffer.getvalue(), DEFAULTS.max_pixels), spec)
    expected = WEIGHTS.transforms()(image)
    assert torch.equal(tensor, expected)
    middle = tensor[:, 112, 112] * torch.tensor(spec.std) + torch.tensor(spec.mean)
    assert middle[2] > 0.9 and middle[0] < 0.1


@pytest.mark.parametrize(
    "size, resize, crop, interpolation",
    [
        ((301, 199), 256, 224, "bilinear"),
        ((199, 301), 232, 224, "bilinear"),
        ((640, 427), 232, 224, "bicubic"),
        ((97, 1003), 160, 128, "bilinear"),
        ((1000, 1000), 256, 255, "nearest"),
        ((256, 300), 256, 224, "bilinear"),  # shorter side already at the target: no resize
    ],
)
def test_equals_torchvision_for_other_sizes_and_specs(size, resize, crop, interpolation):
    """The torchvision-free path stays bit-equal to torchvision's ImageClassification on odd sizes,
    other resize/crop pairs and other filters."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    rng = np.random.default_rng(sum(size) + resize + crop)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    spec = Preprocessing(resize=resize, crop=crop, interpolation=interpolation)
    reference = ImageClassification(
        crop_size=crop, resize_size=resize, interpolation=InterpolationMode(interpolation), antialias=True
    )
    assert torch.equal(to_tensor(image, spec), reference(image))


def test_worker_path_does_not_import_torchvision():
    """torchvision costs each worker about 165 MiB; the handler does not need it."""
    code = "import sys, handler.torchserve_handler; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr
