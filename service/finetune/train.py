"""The two training phases: a new head on frozen features (computed once), then optionally the whole network.

Both stop early when the validation loss has not improved for `patience` epochs and keep the
checkpoint with the lowest validation loss; Ctrl-C ends the phase and keeps that checkpoint too.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from service.finetune.dataset import Dataset
from service.finetune.inputs import augmented_input, batches, serving_input
from service.finetune.model import BaseModel, FeatureExtractor, fold_standardization
from service.finetune.progress import Metrics, Progress


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15  # at most, per phase
    patience: int = 3  # epochs without a lower validation loss before stopping
    batch_size: int = 32
    head_lr: float = 3e-3
    lr: float = 1e-4  # the whole network (--unfreeze)
    seed: int = 0


@dataclass
class PhaseResult:
    name: str
    best_state: dict | None = None
    best_epoch: int = 0
    best_val: Metrics | None = None
    epochs_run: int = 0
    interrupted: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "val_loss": round(self.best_val.loss, 6) if self.best_val else None,
            "val_accuracy": round(self.best_val.accuracy, 6) if self.best_val else None,
            "interrupted": self.interrupted,
        }


def fit(
    name: str,
    config: TrainConfig,
    train_epoch: Callable[[int], Metrics],
    evaluate: Callable[[], Metrics],
    state: Callable[[], dict],
    progress: Progress,
) -> PhaseResult:
    """Epochs of `train_epoch` then `evaluate`, keeping `state()` at the lowest validation loss."""
    result = PhaseResult(name)
    stale = 0
    try:
        for epoch in range(1, config.epochs + 1):
            started = time.monotonic()
            train, val = train_epoch(epoch), evaluate()
            best = result.best_val is None or val.loss < result.best_val.loss
            if best:
                result.best_state, result.best_epoch, result.best_val, stale = copy.deepcopy(state()), epoch, val, 0
            else:
                stale += 1
            result.epochs_run = epoch
            result.history.append(
                {
                    "epoch": epoch,
                    "train_loss": train.loss,
                    "train_accuracy": train.accuracy,
                    "val_loss": val.loss,
                    "val_accuracy": val.accuracy,
                }
            )
            progress.epoch(name, epoch, config.epochs, train, val, best, time.monotonic() - started)
            if stale >= config.patience:
                progress.note(f"{name}: validation loss has not improved for {stale} epochs; stopping early")
                break
    except KeyboardInterrupt:
        result.interrupted = True
        kept = f"epoch {result.best_epoch}, val {result.best_val}" if result.best_val else "nothing yet"
        progress.note(f"{name}: interrupted (Ctrl-C); keeping the best checkpoint so far ({kept})")
    return result


def features_of(extract: FeatureExtractor, dataset_part: list, transform, batch_size: int) -> tuple:
    feats, labels = [], []
    for inputs, y in batches(dataset_part, transform, batch_size):
        feats.append(extract(inputs))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def _metrics(logits: torch.Tensor, labels: torch.Tensor) -> Metrics:
    return Metrics(F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item())


def train_head(base: BaseModel, dataset: Dataset, config: TrainConfig, progress: Progress) -> PhaseResult:
    """Features of every image computed once (serving preprocessing), then a Linear head on them;
    the best head, with the feature standardization folded in, is put into `base`."""
    extract, spec = FeatureExtractor(base), base.source.preprocessing
    started = time.monotonic()
    train_x, train_y = features_of(extract, dataset.train, serving_input(spec), config.batch_size)
    val_x, val_y = features_of(extract, dataset.val, serving_input(spec), config.batch_size)
    progress.note(f"features of {len(train_x) + len(val_x)} images computed once in {time.monotonic() - started:.1f} s")
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    head = nn.Linear(train_x.shape[1], len(dataset.classes))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.head_lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)

    def train_epoch(epoch: int) -> Metrics:
        head.train()
        total_loss, correct = 0.0, 0
        for idx in torch.randperm(len(train_x), generator=generator).split(config.batch_size):
            logits = head(train_x[idx])
            loss = F.cross_entropy(logits, train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == train_y[idx]).sum())
        return Metrics(total_loss / len(train_x), correct / len(train_x))

    @torch.no_grad()
    def evaluate() -> Metrics:
        head.eval()
        return _metrics(head(val_x), val_y)

    result = fit("head", config, train_epoch, evaluate, head.state_dict, progress)
    if result.best_state is not None:
        head.load_state_dict(result.best_state)
        base.set_head(fold_standardization(head, mean, std))
    return result


@torch.no_grad()
def predict(model: nn.Module, dataset_part: list, spec, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of `dataset_part` through the serving preprocessing, model in eval mode."""
    model.eval()
    out, labels = [], []
    for inputs, y in batches(dataset_part, serving_input(spec), batch_size):
        out.append(model(inputs))
        labels.append(y)
    return torch.cat(out), torch.cat(labels)


def train_mode_frozen_norms(model: nn.Module) -> None:
    """Training mode, but batch norm keeps the statistics the head was trained on: small batches of
    a small dataset would otherwise replace them with noisy ones (and, from random weights,
    change every feature the head has learned at the first step)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def train_full(base: BaseModel, dataset: Dataset, config: TrainConfig, progress: Progress) -> PhaseResult:
    """Every layer trained, on augmented crops; the best weights are loaded back into `base`."""
    model, spec = base.model, base.source.preprocessing
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    augment = augmented_input(spec, generator)
    total = -(-len(dataset.train) // config.batch_size)

    def train_epoch(epoch: int) -> Metrics:
        train_mode_frozen_norms(model)
        total_loss, correct, seen = 0.0, 0, 0
        order = torch.randperm(len(dataset.train), generator=generator).tolist()
        for step, (inputs, y) in enumerate(batches(dataset.train, augment, config.batch_size, order), 1):
            logits = model(inputs)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            total_loss, correct, seen = (
                total_loss + loss.item() * len(y),
                correct + int((logits.argmax(1) == y).sum()),
                seen + len(y),
            )
            progress.step("full", epoch, config.epochs, step, total, Metrics(total_loss / seen, correct / seen))
        return Metrics(total_loss / seen, correct / seen)

    def evaluate() -> Metrics:
        return _metrics(*predict(model, dataset.val, spec, config.batch_size))

    result = fit("full", config, train_epoch, evaluate, model.state_dict, progress)
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    model.eval()
    return result
