"""build(): choose the source, capture its preprocessing, quantize if asked, script, export for
the runtime asked (checked against TorchScript), pack."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from handler.model_card import MODEL_FILE, TORCHSCRIPT, ModelCard, Preprocessing, Provenance, sha256_file
from handler.preprocess import PIL_FILTERS
from service.archive.agreement import Agreement, model_agreement
from service.archive.calibration import CalibrationPhotos, calibration_photos
from service.archive.errors import BuildError
from service.archive.export import check_runtime_request, export_for_runtime
from service.archive.pack import load_torchscript, pack, save_torchscript, script_and_check
from service.archive.quantize import QUANTIZED_ENGINE, quantize_int8
from service.archive.sources import Source, eager_source, pretrained_int8_source, torchscript_source
from service.names import DEFAULT_MODEL, MODEL_CONFIG, MODEL_STORE
from service.versions.store import next_version

DEFAULT_ARCH = "resnet18"


@dataclass(frozen=True)
class BuildRequest:
    """What to build: one field per command-line flag of scripts/build_archive.py."""

    weights: Path | None = None  # a local state dict for `arch`
    random_weights: bool = False
    torchscript: Path | None = None  # a TorchScript classifier of the user's own (needs labels)
    seed: int = 0  # for random_weights
    labels: Path | None = None
    arch: str = DEFAULT_ARCH
    model_name: str = DEFAULT_MODEL
    version: str | None = None  # None: one above the highest of model_name in export_path (service/versions)
    export_path: Path = MODEL_STORE
    model_config: Path = MODEL_CONFIG
    resize: int | None = None  # None: the weights' own
    crop: int | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    interpolation: str | None = None  # resize filter, torchvision's names ("bilinear", "bicubic")
    force: bool = False
    quantize: str | None = None  # "int8": TorchScript's x86 engine, or ONNX Runtime's with --runtime onnxruntime
    calibration: Path | None = None  # folder of photos for int8 calibration and export checks
    runtime: str = TORCHSCRIPT  # what serves the model: torchscript, onnxruntime, openvino
    precision: str = "fp32"  # bf16: openvino on a CPU with bf16 (int8 is --quantize)
    trained: Source | None = None  # a model trained in this process (service/finetune); no flag

    @property
    def torch_int8(self) -> bool:
        """int8 on TorchScript's quantized engine (eager quantization of a torchvision model)."""
        return bool(self.quantize) and self.runtime == TORCHSCRIPT

    @property
    def calibrates(self) -> bool:
        """int8 from fp32 weights needs calibration photos; torchvision's int8 weights come calibrated
        (ONNX Runtime int8 calibrates the export: its photos come with `exports`)."""
        return self.torch_int8 and bool(self.weights or self.random_weights)

    @property
    def exports(self) -> bool:
        """Another runtime than TorchScript: model.pt is exported, and the export checked on photos."""
        return self.runtime != TORCHSCRIPT


def choose_source(request: BuildRequest) -> Source:
    if request.trained:
        return request.trained
    if request.torchscript:
        if not request.labels:
            raise BuildError("--torchscript needs --labels")
        return torchscript_source(request.torchscript, request.labels)
    if request.torch_int8 and not request.calibrates:
        return pretrained_int8_source(request.arch, request.labels)
    seed = request.seed if request.random_weights else None
    return eager_source(request.arch, request.labels, request.weights, seed)


def capture_preprocessing(own: Preprocessing, request: BuildRequest) -> Preprocessing:
    """The weights' own preprocessing with whatever the request overrides."""
    preprocessing = Preprocessing(
        resize=request.resize or own.resize,
        crop=request.crop or own.crop,
        mean=tuple(request.mean) if request.mean else own.mean,
        std=tuple(request.std) if request.std else own.std,
        interpolation=request.interpolation or own.interpolation,
    )
    if preprocessing.crop > preprocessing.resize:
        raise BuildError(f"--crop {preprocessing.crop} is larger than --resize {preprocessing.resize}")
    return preprocessing


def compile_model(
    source: Source, preprocessing: Preprocessing, quantize: str | None, photos: CalibrationPhotos | None
) -> tuple[torch.jit.ScriptModule, str | None]:
    """The TorchScript model to serve and, for int8, how it was calibrated."""
    if source.torchscript:
        return load_torchscript(source.torchscript, len(source.labels), preprocessing.crop), None
    model, calibration = source.model, source.calibration
    if quantize and calibration is None:  # fp32 weights: calibrate with the final preprocessing
        model, calibration = quantize_int8(model, source.arch, len(source.labels), preprocessing, photos)
    return script_and_check(model, preprocessing.crop), calibration


def check_request(request: BuildRequest, archive: Path) -> None:
    """Refusals that need no model: an existing archive, a missing config, flags that do not go together."""
    if archive.exists() and not request.force:
        raise BuildError(f"{archive} exists; pass --force to replace it")
    if not request.model_config.is_file():
        raise BuildError(f"model config {request.model_config} does not exist")
    if request.torch_int8 and request.torchscript:
        raise BuildError("--quantize needs a torchvision --arch, not --torchscript (or --runtime onnxruntime)")
    if request.interpolation and request.interpolation not in PIL_FILTERS:
        raise BuildError(f"--interpolation {request.interpolation}: choose one of {', '.join(PIL_FILTERS)}")
    if request.calibration and not (request.calibrates or request.exports):
        raise BuildError(
            "--calibration goes with --quantize int8 and --weights or --random-weights "
            "(torchvision's official int8 weights come calibrated), or with --runtime onnxruntime/openvino"
        )
    check_runtime_request(request.runtime, request.precision, request.quantize)


def request_photos(request: BuildRequest) -> CalibrationPhotos | None:
    """The photos the build needs (int8 calibration, the export check), found before any work."""
    if request.calibrates:
        return calibration_photos(request.calibration)
    if request.exports:
        return calibration_photos(request.calibration, f"checking the {request.runtime} export against TorchScript")
    return None


def export(model_file: Path, card: ModelCard, photos: CalibrationPhotos) -> tuple[ModelCard, Agreement]:
    """Export model.pt for the card's runtime beside it; the card then records every model file's sha256."""
    files, agreement, calibration = export_for_runtime(model_file, card, photos)
    hashes = {name: sha256_file(path) for name, path in files.items()}
    calibration = calibration or card.provenance.calibration
    provenance = dataclasses.replace(card.provenance, model_files=hashes, calibration=calibration)
    return dataclasses.replace(card, provenance=provenance), agreement


def report_agreement(
    request: BuildRequest,
    source: Source,
    scripted: torch.jit.ScriptModule,
    card: ModelCard,
    photos: CalibrationPhotos | None,
    agreement: Agreement | None,
) -> None:
    """What the opt-in precisions (int8, bf16) and an fp32 export cost in answers, printed at build time
    (int8 from fp32 weights: the eager fp32 model against the int8 TorchScript, on the calibration photos)."""
    what = f"{card.provenance.served_runtime} {card.provenance.served_precision}"
    if request.torch_int8 and source.calibration is None and photos is not None:  # fp32 weights at hand
        agreement = model_agreement(source.model, scripted, card.preprocessing, photos, source.weights)
    if agreement is not None and photos is not None:
        print(f"{what} on {photos.what}: {agreement.summary()}")
    elif request.quantize:
        print(
            f"{what}: torchvision's pre-quantized weights, no fp32 model at hand to compare with here "
            "(torchvision publishes their ImageNet accuracy against fp32's)"
        )


def build(request: BuildRequest) -> Path:
    """Build the archive the request describes; returns its path. BuildError says why not."""
    export_path = Path(request.export_path).resolve()
    archive = export_path / f"{request.model_name}.mar"
    check_request(request, archive)
    version = request.version or next_version(export_path, request.model_name, replacing=archive)
    photos = request_photos(request)  # fail before the work
    source = choose_source(request)
    preprocessing = capture_preprocessing(source.preprocessing, request)
    torch_int8 = request.quantize if request.torch_int8 else None
    scripted, calibration = compile_model(source, preprocessing, torch_int8, photos)
    with tempfile.TemporaryDirectory(prefix="build-archive-") as tmp:
        model_file = Path(tmp) / MODEL_FILE
        save_torchscript(scripted, model_file)
        provenance = Provenance(
            weights=source.weights,
            arch=source.arch,
            num_classes=len(source.labels),
            model_sha256=sha256_file(model_file),
            weights_sha256=source.weights_sha256,
            weights_file_sha256=source.weights_file_sha256,
            calibration=calibration,
            quantization=request.quantize,
            quantized_engine=QUANTIZED_ENGINE if torch_int8 else None,
            torch=torch.__version__,
            torchvision=torchvision.__version__,
            training=source.training,
            runtime=request.runtime,
            precision=request.quantize or request.precision,
            version=version,
        )
        card = ModelCard(labels=source.labels, preprocessing=preprocessing, provenance=provenance)
        agreement = None
        if request.exports:
            card, agreement = export(model_file, card, photos)
        report_agreement(request, source, scripted, card, photos, agreement)
        extra = [model_file.with_name(name) for name in card.provenance.model_files or {}]
        pack(model_file, card, request.model_name, version, request.model_config, export_path, extra)
    print(
        f"built {archive} (version {version}, {source.arch}, weights {source.weights}, {len(source.labels)} classes, "
        f"{card.provenance.served_runtime} {card.provenance.served_precision})"
    )
    return archive
