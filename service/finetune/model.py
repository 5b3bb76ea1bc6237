"""The starting network: the archive builder's own model sources, with a new head for the user's classes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from handler.model_card import Preprocessing
from service.archive.errors import BuildError
from service.archive.sources import Source, eager_source
from service.finetune.errors import FinetuneError


@dataclass
class BaseModel:
    """A torchvision classifier whose last Linear layer is the (new) head."""

    source: Source  # the base weights as the archive builder loaded them (name, sha256, preprocessing)
    model: nn.Module
    head_path: str  # e.g. "fc" or "classifier.3"

    @property
    def head(self) -> nn.Linear:
        return self.model.get_submodule(self.head_path)  # type: ignore[return-value]

    def set_head(self, module: nn.Module) -> None:
        parent, _, name = self.head_path.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, name, module)


def last_linear(model: nn.Module, arch: str) -> str:
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise FinetuneError(f"--arch {arch} has no Linear classification layer to replace; pick e.g. resnet18")
    return linears[-1]


def load_base(arch: str, weights: Path | None, random_seed: int | None) -> Source:
    """The same weights the archive builder would serve: official (downloaded, with its offline
    message), a local file, or random."""
    try:
        return eager_source(arch, None, weights, random_seed)
    except BuildError as e:
        raise FinetuneError(str(e)) from None


def with_new_head(source: Source, num_classes: int, seed: int) -> BaseModel:
    """The base network with its last Linear layer replaced by a fresh one for `num_classes`."""
    model = source.model
    assert model is not None
    base = BaseModel(source, model, last_linear(model, source.arch))
    torch.manual_seed(seed)
    base.set_head(nn.Linear(base.head.in_features, num_classes))
    return base


def image_size_preprocessing(own: Preprocessing, image_size: int | None) -> Preprocessing:
    """The weights' own preprocessing, or the same resize-to-crop ratio at a smaller crop."""
    if not image_size:
        return own
    resize = max(image_size, round(image_size * own.resize / own.crop))
    return replace(own, resize=resize, crop=image_size)


class FeatureExtractor:
    """The network up to its head, frozen: features of a batch, computed once per image."""

    def __init__(self, base: BaseModel) -> None:
        self.base = base

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        head = self.base.head
        self.base.set_head(nn.Identity())
        try:
            self.base.model.eval()
            return self.base.model(batch)
        finally:
            self.base.set_head(head)


def fold_standardization(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """A head trained on (features - mean) / std as one Linear on raw features, for serving."""
    folded = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        folded.weight.copy_(head.weight / std)
        folded.bias.copy_(head.bias - (head.weight * (mean / std)).sum(1))
    return folded


@torch.no_grad()
def estimate_norm_statistics(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Batch-norm statistics averaged over `inputs`: random weights come with none (mean 0, variance 1),
    which leaves the features badly scaled and the whole-network phase unstable. Returns the layers set."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches
    model.train()
    for batch in inputs:
        model(batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    return len(norms)
