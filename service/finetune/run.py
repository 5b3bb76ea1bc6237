"""finetune(): check the folder, start from the builder's weights, train, build the archive, write the report.

The archive comes out of service.archive.build() like every other: the trained model is handed
over as an in-memory source, with the labels in the class-index order it was trained with and
the preprocessing it was trained with.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from handler.cores import available_cores
from service.archive import BuildError, BuildRequest, build
from service.archive.builder import DEFAULT_ARCH, check_request
from service.archive.sources import official_weights, preprocessing_of, trained_source
from service.finetune.dataset import Dataset, load_dataset
from service.finetune.errors import FinetuneError
from service.finetune.inputs import batches, serving_input
from service.finetune.model import (
    BaseModel,
    estimate_norm_statistics,
    image_size_preprocessing,
    load_base,
    with_new_head,
)
from service.finetune.progress import Progress
from service.finetune.report import evaluation, write_report
from service.finetune.train import PhaseResult, TrainConfig, predict, train_full, train_head
from service.names import MODEL_CONFIG, MODEL_STORE
from service.versions.store import next_version


@dataclass(frozen=True)
class FinetuneRequest:
    """What to train and build: one field per flag of scripts/finetune.py."""

    data: Path
    model_name: str
    version: str | None = None  # None: one above the highest of model_name in export_path
    export_path: Path = MODEL_STORE
    model_config: Path = MODEL_CONFIG
    arch: str = DEFAULT_ARCH
    weights: Path | None = None  # a local state dict for `arch`; None: the official weights
    random_weights: bool = False
    seed: int = 0
    val_split: float = 0.2
    image_size: int | None = None  # crop size; None: the weights' own
    unfreeze: bool = False
    train: TrainConfig = TrainConfig()
    force: bool = False

    def build_request(self, trained=None) -> BuildRequest:
        return BuildRequest(
            model_name=self.model_name,
            version=self.version,
            export_path=Path(self.export_path),
            model_config=Path(self.model_config),
            force=self.force,
            arch=self.arch,
            trained=trained,
        )


@dataclass(frozen=True)
class FinetuneResult:
    archive: Path
    reports: dict[str, Path]
    accuracy: float
    seconds: float


def check_output(request: FinetuneRequest) -> None:
    """The builder's own refusals (archive exists, no model config), before any training."""
    try:
        check_request(request.build_request(), Path(request.export_path).resolve() / f"{request.model_name}.mar")
    except BuildError as e:
        raise FinetuneError(str(e)) from None


def describe_dataset(dataset: Dataset, progress: Progress) -> None:
    for item in dataset.unreadable:
        progress.note(f"skipped {item.path}: {item.reason}")
    if dataset.unreadable:
        progress.note(f"skipped {len(dataset.unreadable)} file(s) the handler cannot decode")
    counts = ", ".join(f"{name} {c['train']}+{c['val']}" for name, c in dataset.counts().items())
    progress.note(f"{len(dataset.classes)} classes (train+val images, in class-index order): {counts}")
    progress.note(f"validation: {dataset.split}")


def train(base: BaseModel, dataset: Dataset, request: FinetuneRequest, progress: Progress) -> list[PhaseResult]:
    """The head phase, then (--unfreeze) the whole network; keeps whichever validated better."""
    head = train_head(base, dataset, request.train, progress)
    if head.best_state is None:
        raise FinetuneError("interrupted before the first epoch ended: nothing to save, no archive written")
    if not request.unfreeze or head.interrupted:
        return [head]
    head_weights = copy.deepcopy(base.model.state_dict())
    full = train_full(base, dataset, request.train, progress)
    if full.best_val is None or full.best_val.loss >= head.best_val.loss:  # type: ignore[union-attr]
        progress.note("the whole-network phase did not lower the validation loss; keeping the head-only model")
        base.model.load_state_dict(head_weights)
    return [head, full]


def training_record(base: BaseModel, dataset: Dataset, request: FinetuneRequest, phases: list, ev: dict) -> dict:
    """provenance.json's `training`: what a reader needs to trust or reproduce the model."""
    return {
        "base_weights": base.source.weights,
        "base_weights_sha256": base.source.weights_sha256,
        "arch": request.arch,
        "dataset": {
            "folder": dataset.root.resolve().name,
            "fingerprint": dataset.fingerprint,
            "split": dataset.split,
            "images": len(dataset.train) + len(dataset.val),
            "unreadable": len(dataset.unreadable),
        },
        "classes": dataset.counts(),
        "epochs": {phase.name: phase.epochs_run for phase in phases},
        "phases": {phase.name: phase.summary() for phase in phases},
        "validation_accuracy": ev["accuracy"],
        "validation_loss": ev["loss"],
        "seed": request.seed,
        "image_size": base.source.preprocessing.crop,
    }


def finetune(request: FinetuneRequest, progress: Progress | None = None) -> FinetuneResult:
    """Train on the folder and build the archive; FinetuneError says why not (and nothing is written)."""
    progress = progress or Progress()
    started = time.monotonic()
    archive_path = Path(request.export_path).resolve() / f"{request.model_name}.mar"
    version = request.version or next_version(request.export_path, request.model_name, replacing=archive_path)
    request = dataclasses.replace(request, version=version)
    check_output(request)
    torch.set_num_threads(available_cores())
    torch.manual_seed(request.seed)
    try:
        own = preprocessing_of(official_weights(request.arch))
    except BuildError as e:
        raise FinetuneError(str(e)) from None
    spec = image_size_preprocessing(own, request.image_size)
    dataset = load_dataset(request.data, spec, request.val_split, request.seed)
    describe_dataset(dataset, progress)
    source = load_base(request.arch, request.weights, request.seed if request.random_weights else None)
    base = with_new_head(dataclasses.replace(source, preprocessing=spec), len(dataset.classes), request.seed)
    if request.random_weights:
        inputs = (x for x, _ in batches(dataset.train, serving_input(spec), request.train.batch_size))
        layers = estimate_norm_statistics(base.model, inputs)
        progress.note(f"random weights: batch-norm statistics of {layers} layers estimated on the training images")
    phases = train(base, dataset, request, progress)
    ev = evaluation(dataset, *predict(base.model, dataset.val, spec, request.train.batch_size))
    record = training_record(base, dataset, request, phases, ev)
    trained = trained_source(
        base.model, request.arch, dataset.classes, spec, f"finetuned:{base.source.weights}", record
    )
    try:
        archive = build(request.build_request(trained))
    except BuildError as e:
        raise FinetuneError(str(e)) from None
    seconds = time.monotonic() - started
    report = {
        "model_name": request.model_name,
        "version": request.version,
        "archive": archive.name,
        "data_root": str(dataset.root.resolve()),  # the gate's default images (service/versions/gate.py)
        "classes": dataset.classes,
        "training": record,
        "history": {phase.name: phase.history for phase in phases},
        "unreadable": [dataclasses.asdict(u) for u in dataset.unreadable],
        "evaluation": ev,
        "seconds": round(seconds, 1),
    }
    reports = write_report(report, archive.parent, request.model_name)
    progress.note(
        f"validation accuracy {100 * ev['accuracy']:.1f} %; report: {', '.join(str(p) for p in reports.values())}"
    )
    return FinetuneResult(archive, reports, ev["accuracy"], seconds)
