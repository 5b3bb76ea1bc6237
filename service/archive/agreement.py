"""How closely a faster model (int8, bf16, another runtime) follows the fp32 TorchScript one.

One definition for the builder's printout (--quantize int8, --precision bf16), the benchmark's
report (scripts/bench.py) and the test that bounds it (tests/test_speedups_keep_answers.py).
Images: the sample photos (or --calibration DIR) and augmented crops of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from handler.model_card import MODEL_FILE, ModelCard
from handler.runtime import load_model
from service.archive.calibration import calibration_batches


@dataclass(frozen=True)
class Agreement:
    """With random weights every image gets the same top-1 class (a class-wide bias dominates the
    logits), so plain agreement is trivially high; "centered" figures subtract each model's mean
    logits over the set first and compare what depends on the image."""

    images: int
    top1_agreement: float
    top1_agreement_centered: float
    distinct_fp32_top1: int
    distinct_fp32_top1_centered: int
    logit_cosine: float
    logit_cosine_centered: float
    weights: str  # the fp32 model's weights, e.g. "random(seed=0)"
    max_logit_difference: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the person running the build."""
        random = " (random weights: the centered figure is the one that depends on the image)"
        return (
            f"top-1 agreement with fp32 on {self.images} images: {self.top1_agreement:.1%}, "
            f"centered {self.top1_agreement_centered:.1%}; logit cosine {self.logit_cosine:.4f}, "
            f"max logit difference {self.max_logit_difference:.3g}; weights {self.weights}"
            + (random if self.weights.startswith("random") else "")
        )




def logit_agreement(fp32: torch.Tensor, other: torch.Tensor, weights: str) -> Agreement:
    """Compare two models' logits over the same images (rows)."""
    a, b = fp32.float(), other.float()
    ac, bc = a - a.mean(0), b - b.mean(0)
    cosine = torch.nn.functional.cosine_similarity
    return Agreement(
        images=len(a),
        top1_agreement=(a.argmax(1) == b.argmax(1)).float().mean().item(),
        top1_agreement_centered=(ac.argmax(1) == bc.argmax(1)).float().mean().item(),
        distinct_fp32_top1=int(a.argmax(1).unique().numel()),
        distinct_fp32_top1_centered=int(ac.argmax(1).unique().numel()),
        logit_cosine=cosine(a, b).mean().item(),
        logit_cosine_centered=cosine(ac, bc).mean().item(),
        weights=weights,
        max_logit_difference=(a - b).abs().max().item(),
    )


def _served(model_dir: Path):
    """The archive's model as the handler serves it (optimized; int8 on its quantized engine)."""
    return load_model(model_dir / MODEL_FILE, ModelCard.read(model_dir).provenance)


def int8_agreement(fp32_dir: Path, int8_dir: Path, crops_per_photo: int = 16, seed: int = 12345) -> Agreement:
    """Compare the models of two unpacked archives on the sample photos and `crops_per_photo`
    augmented crops of each (drawn with `seed`), preprocessed as the fp32 archive says."""
    card = ModelCard.read(fp32_dir)
    fp32, other = _served(fp32_dir), _served(int8_dir)
    data = torch.cat(calibration_batches(card.preprocessing, crops_per_photo=crops_per_photo, seed=seed))
    with torch.inference_mode():
        return logit_agreement(fp32(data), other(data), card.provenance.weights)


def model_agreement(fp32, other, preprocessing, photos, weights: str, crops_per_photo: int = 4) -> Agreement:
    """Two models in this process (e.g. the eager fp32 model and its int8 TorchScript) on the photos
    and crops of them."""
    data = torch.cat(calibration_batches(preprocessing, crops_per_photo=crops_per_photo, seed=3, photos=photos.paths))
    with torch.inference_mode():
        return logit_agreement(fp32(data), other(data), weights)
