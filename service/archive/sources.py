"""Choosing the model: torchvision's official weights, a local weights file, random weights,
torchvision's pre-quantized int8 weights, or a TorchScript model of the user's own."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torchvision import models

from handler.model_card import Preprocessing, read_labels, sha256_file
from service.archive.errors import BuildError
from service.archive.quantize import QUANTIZED_ENGINE


@dataclass(frozen=True)
class Source:
    """A model with its labels, its own preprocessing and what is known of its weights.

    `model` is None for a TorchScript file: it is loaded (and its output checked) once the final
    crop size is known. `calibration` is set when the weights come already quantized."""

    arch: str
    labels: list[str]
    preprocessing: Preprocessing
    weights: str
    weights_sha256: str | None
    weights_file_sha256: str | None = None
    calibration: str | None = None
    model: torch.nn.Module | None = None
    torchscript: Path | None = None
    training: dict[str, object] | None = None  # a model trained in this process (service/finetune)


def official_weights(arch: str) -> torchvision.models.WeightsEnum:
    try:
        return models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise BuildError(f"{arch} is not a torchvision classification model")


def preprocessing_of(weights: torchvision.models.WeightsEnum) -> Preprocessing:
    """The weights' own transforms, as torchvision defines them."""
    t = weights.transforms()
    return Preprocessing(
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
    )


def hub_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision's download puts these weights (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def download_state_dict(weights: torchvision.models.WeightsEnum) -> dict:
    """torchvision's own download into torch's cache; on failure, say exactly how to get out."""
    file_name = hub_file(weights).name
    try:
        return weights.get_state_dict(progress=sys.stderr.isatty(), check_hash=True)
    except Exception as e:
        raise BuildError(
            f"Could not download the official weights {weights} ({type(e).__name__}: {e}).\n"
            f"Get {file_name} from {weights.url} on a connected machine, then either\n"
            f"  - put it at {hub_file(weights)} and run this again, or\n"
            f"  - build with:  --weights /path/to/{file_name}   (make run WEIGHTS=/path/to/{file_name})\n"
            "For an offline smoke run without real weights: --random-weights   (make run WEIGHTS=random);\n"
            "its answers are meaningless and say so."
        ) from None


def load_state_dict_file(path: Path) -> dict:
    if not path.is_file():
        raise BuildError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A hash of the weights themselves, independent of how they were stored."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def eager_source(
    arch: str, labels_file: Path | None, weights_file: Path | None, random_seed: int | None
) -> Source:
    """An fp32 torchvision model: random weights (random_seed set), a weights file, or the official
    weights (downloaded). Labels and preprocessing default to the official weights' own."""
    weights = official_weights(arch)
    labels = read_labels(labels_file) if labels_file else list(weights.meta["categories"])
    builder = models.get_model_builder(arch)
    file_sha256 = None
    if random_seed is not None:
        torch.manual_seed(random_seed)
        model = builder(weights=None, num_classes=len(labels))
        name = f"random(seed={random_seed})"
    elif weights_file:
        model = builder(weights=None, num_classes=len(labels))
        model.load_state_dict(load_state_dict_file(weights_file))
        name, file_sha256 = f"file:{weights_file.name}", sha256_file(weights_file)
    else:
        if labels_file:
            raise BuildError(
                "--labels goes with --weights, --torchscript or --random-weights, not the official weights"
            )
        state = download_state_dict(weights)
        model = builder(weights=None)
        model.load_state_dict(state)
        name, file_sha256 = str(weights).split(".")[-1], sha256_file(hub_file(weights))
    model.eval()
    return Source(
        arch=arch,
        labels=labels,
        preprocessing=preprocessing_of(weights),
        weights=name,
        weights_sha256=state_dict_sha256(model),
        weights_file_sha256=file_sha256,
        model=model,
    )


def pretrained_int8_source(arch: str, labels_file: Path | None) -> Source:
    """torchvision's own pre-quantized weights (downloaded), e.g. ResNet18_QuantizedWeights."""
    from torchvision.models import quantization as qmodels

    fp32_weights = official_weights(arch)
    if labels_file:
        raise BuildError("--labels goes with --weights or --random-weights, not the official weights")
    try:
        weights = models.get_model_weights(f"quantized_{arch}").DEFAULT
    except (ValueError, KeyError):
        raise BuildError(f"torchvision has no pre-quantized weights for {arch}; use --weights FILE --quantize int8")
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    try:
        model = getattr(qmodels, arch)(weights=weights, quantize=True)
    except Exception as e:
        raise BuildError(
            f"Could not download the pre-quantized weights {weights} ({type(e).__name__}: {e}).\n"
            f"Build from fp32 weights instead: --weights /path/to/resnet18-f37072fd.pth --quantize int8\n"
            "--calibration DIR (post-training calibration on a folder of your photos), or\n"
            "--random-weights --quantize int8."
        ) from None
    torch.backends.quantized.engine = QUANTIZED_ENGINE  # the builder switches to fbgemm
    cached = hub_file(weights)
    file_sha256 = sha256_file(cached) if cached.is_file() else None
    return Source(
        arch=arch,
        labels=list(fp32_weights.meta["categories"]),
        preprocessing=preprocessing_of(fp32_weights),
        weights=str(weights).split(".")[-1],
        weights_sha256=file_sha256,
        weights_file_sha256=file_sha256,
        calibration=f"torchvision pre-quantized ({weights.meta.get('backend')})",
        model=model.eval(),
    )


def torchscript_source(path: Path, labels_file: Path) -> Source:
    """The user's own TorchScript classifier; loaded and checked later, at the final crop size."""
    if not path.is_file():
        raise BuildError(f"TorchScript file {path} does not exist")
    return Source(
        arch="torchscript",
        labels=read_labels(labels_file),
        preprocessing=Preprocessing(),
        weights=f"torchscript:{path.name}",
        weights_sha256=sha256_file(path),
        torchscript=path,
    )


def trained_source(
    model: torch.nn.Module,
    arch: str,
    labels: list[str],
    preprocessing: Preprocessing,
    weights: str,
    training: dict[str, object],
) -> Source:
    """A model trained in this process (service/finetune): its labels are in the class-index order
    it was trained with, its preprocessing is the one it was trained with."""
    model.eval()
    return Source(
        arch=arch,
        labels=list(labels),
        preprocessing=preprocessing,
        weights=weights,
        weights_sha256=state_dict_sha256(model),
        model=model,
        training=training,
    )
