"""How closely an int8 archive's model follows the fp32 one it was quantized from.

One definition for the benchmark's report (scripts/bench.py) and the test that bounds it
(tests/test_speedups_keep_answers.py). Images: the sample photos and augmented crops of them
(the sample photos need the dev-only packages; this is not on the runtime path).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from handler.model_card import MODEL_FILE, ModelCard
from handler.runtime import load_model
from service.archive.calibration import calibration_batches


@dataclass(frozen=True)
class Int8Agreement:
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
    weights: str  # the fp32 archive's weights, e.g. "random(seed=0)"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _served(model_dir: Path) -> torch.jit.ScriptModule:
    """The archive's model as the handler serves it (optimized; int8 on its quantized engine)."""
    return load_model(model_dir / MODEL_FILE, ModelCard.read(model_dir).provenance)


def int8_agreement(fp32_dir: Path, int8_dir: Path, crops_per_photo: int = 16, seed: int = 12345) -> Int8Agreement:
    """Compare the models of two unpacked archives on the sample photos and `crops_per_photo`
    augmented crops of each (drawn with `seed`), preprocessed as the fp32 archive says."""
    card = ModelCard.read(fp32_dir)
    fp32, int8 = _served(fp32_dir), _served(int8_dir)
    data = torch.cat(calibration_batches(card.preprocessing, crops_per_photo=crops_per_photo, seed=seed))
    with torch.inference_mode():
        a, b = fp32(data), int8(data)
    ac, bc = a - a.mean(0), b - b.mean(0)
    cosine = torch.nn.functional.cosine_similarity
    return Int8Agreement(
        images=len(data),
        top1_agreement=(a.argmax(1) == b.argmax(1)).float().mean().item(),
        top1_agreement_centered=(ac.argmax(1) == bc.argmax(1)).float().mean().item(),
        distinct_fp32_top1=int(a.argmax(1).unique().numel()),
        distinct_fp32_top1_centered=int(ac.argmax(1).unique().numel()),
        logit_cosine=cosine(a, b).mean().item(),
        logit_cosine_centered=cosine(ac, bc).mean().item(),
        weights=card.provenance.weights,
    )
