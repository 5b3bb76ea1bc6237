"""Preprocessing equals torchvision's ResNet18_Weights.IMAGENET1K_V1.transforms() on real photos."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights

from handler.images import decode_image
from handler.model_card import Preprocessing
from handler.preprocess import model_input, to_tensor
from handler.settings import DEFAULTS
from scripts.build_archive import preprocessing_of
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
