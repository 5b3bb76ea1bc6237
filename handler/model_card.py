"""What an archive carries besides the weights: labels, preprocessing and provenance.

The archive builder writes these files and the handler reads them, so each fact about
the model is stated once, next to the weights it belongs to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

LABELS_FILE = "labels.json"
PREPROCESSING_FILE = "preprocessing.json"
PROVENANCE_FILE = "provenance.json"
MODEL_FILE = "model.pt"
# The export of model.pt that ONNX Runtime and OpenVINO archives run (handler/runtime.py).
ONNX_FILE = "model.onnx"
TORCHSCRIPT = "torchscript"


class ArchiveIntegrityError(RuntimeError):
    """The archive's model file is not the one its provenance.json records."""


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, center-crop, normalize: torchvision's ImageClassification."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=str(data.get("interpolation", "bilinear")),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Provenance:
    """Where the archive's model came from, as the builder recorded it in provenance.json."""

    weights: str  # "random(seed=N)", "file:NAME", "torchscript:NAME" or torchvision's weights name
    arch: str
    num_classes: int
    model_sha256: str  # of model.pt: the handler refuses to serve another file
    weights_sha256: str | None  # of the state dict (None: pre-quantized weights not in the hub cache)
    weights_file_sha256: str | None = None
    calibration: str | None = None
    quantization: str | None = None
    quantized_engine: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    # Fine-tuned models (service/finetune): base weights, dataset fingerprint, class counts, epochs,
    # validation accuracy. JSON-ready facts only; absent for every other archive.
    training: dict[str, object] | None = None
    # What runs the model (handler/runtime.py: "torchscript", "onnxruntime", "openvino") and at which
    # precision ("fp32", "bf16", "int8"); None in archives built before runtimes were recorded.
    runtime: str | None = None
    precision: str | None = None
    # sha256 of every model file the runtime reads besides model.pt (e.g. model.onnx): checked at load.
    model_files: dict[str, str] | None = None
    # The model version the archive was built as (also in its MANIFEST.json); None in older archives.
    version: str | None = None

    @property
    def served_runtime(self) -> str:
        return self.runtime or TORCHSCRIPT

    @property
    def served_precision(self) -> str:
        return self.precision or ("int8" if self.quantization else "fp32")

    @property
    def random_weights(self) -> bool:
        return self.weights.startswith("random")

    @classmethod
    def from_dict(cls, data: dict) -> Provenance:
        """Unknown keys are ignored so that archives built by a newer builder still load."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, object]:
        """The provenance.json keys: optional facts the build did not have are left out."""
        required = {f.name for f in fields(self) if f.default is MISSING}
        return {k: v for k, v in asdict(self).items() if v is not None or k in required}


def parse_labels(data: object) -> list[str]:
    """Accept a JSON list of names or TorchServe's index_to_name.json ({"0": "name"} or {"0": [id, name]})."""
    if isinstance(data, list):
        names = [str(v) for v in data]
    elif isinstance(data, dict):
        indices = sorted(int(k) for k in data)
        if indices != list(range(len(indices))):
            raise ValueError("label indices must be 0..N-1 without gaps")
        names = []
        for i in indices:
            value = data[str(i)]
            names.append(str(value[-1]) if isinstance(value, list) else str(value))
    else:
        raise ValueError("labels must be a JSON list or an index_to_name mapping")
    if not names:
        raise ValueError("labels are empty")
    return names


def read_labels(path: Path) -> list[str]:
    return parse_labels(json.loads(Path(path).read_text()))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    labels: list[str]
    preprocessing: Preprocessing
    provenance: Provenance

    @property
    def random_weights(self) -> bool:
        return self.provenance.random_weights

    def write(self, directory: Path) -> None:
        directory = Path(directory)
        (directory / LABELS_FILE).write_text(json.dumps(self.labels, indent=0) + "\n")
        (directory / PREPROCESSING_FILE).write_text(json.dumps(self.preprocessing.to_dict(), indent=2) + "\n")
        (directory / PROVENANCE_FILE).write_text(json.dumps(self.provenance.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, directory: Path) -> ModelCard:
        directory = Path(directory)
        return cls(
            labels=read_labels(directory / LABELS_FILE),
            preprocessing=Preprocessing.from_dict(json.loads((directory / PREPROCESSING_FILE).read_text())),
            provenance=Provenance.from_dict(json.loads((directory / PROVENANCE_FILE).read_text())),
        )

    def verify_model_file(self, model_file: Path, expected: str | None = None) -> None:
        """Refuse to serve a model file that is not the one the archive was built with."""
        expected = expected or self.provenance.model_sha256
        if not Path(model_file).is_file():
            raise ArchiveIntegrityError(
                f"{Path(model_file).name} is missing from the archive, but provenance.json records it; "
                "refusing to serve it"
            )
        actual = sha256_file(model_file)
        if expected != actual:
            raise ArchiveIntegrityError(
                f"{Path(model_file).name} has sha256 {actual}, but provenance.json records {expected}: "
                "the archive was altered after it was built; refusing to serve it"
            )

    def verify_model_files(self, directory: Path) -> None:
        """model.pt and every exported model file the runtime reads, each against its recorded sha256."""
        self.verify_model_file(Path(directory) / MODEL_FILE)
        for name, expected in sorted((self.provenance.model_files or {}).items()):
            self.verify_model_file(Path(directory) / name, expected)
