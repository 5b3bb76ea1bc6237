"""The model store as versions: each archive's manifest names its model and version, and deploy keeps
versions apart by file name (`<model>-v<version>.mar`), so TorchServe loads every one at start."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from handler.model_card import LABELS_FILE, PROVENANCE_FILE

MANIFEST = "MAR-INF/MANIFEST.json"
# What a bare archive name the management API may register looks like (service/doors/front.py refuses others).
ARCHIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.mar")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Retired archives move here: hidden, so TorchServe's load_models=all skips it, and nothing is deleted.
RETIRED_DIR = ".retired"
REPORT_SUFFIXES = (".report.json", ".report.md", ".confusion.png")
# A model's first version (what archives were always built as); later ones count up: 2, 3, ...
FIRST_VERSION = "1.0"


class VersionError(RuntimeError):
    """A version operation refused, with the reason a person can act on."""


@dataclass(frozen=True)
class Archive:
    """One .mar file and what its manifest and model card say."""

    path: Path
    model: str
    version: str
    labels: list[str]
    provenance: dict
    model_config: dict

    @classmethod
    def read(cls, path: Path) -> Archive:
        path = Path(path)
        if not path.is_file():
            raise VersionError(f"{path} does not exist")
        try:
            with zipfile.ZipFile(path) as z:
                manifest = json.loads(z.read(MANIFEST))["model"]
                names = set(z.namelist())
                labels = json.loads(z.read(LABELS_FILE)) if LABELS_FILE in names else []
                provenance = json.loads(z.read(PROVENANCE_FILE)) if PROVENANCE_FILE in names else {}
                config_name = manifest.get("configFile")
                config_text = z.read(config_name).decode() if config_name in names else ""
        except (zipfile.BadZipFile, KeyError, ValueError) as e:
            raise VersionError(f"{path} is not a model archive (.mar with {MANIFEST}): {e}") from None
        if isinstance(labels, dict):  # TorchServe's index_to_name.json
            labels = [labels[k] for k in sorted(labels, key=int)]
        return cls(
            path, manifest["modelName"], str(manifest["modelVersion"]), list(labels), provenance, _yaml(config_text)
        )

    @property
    def min_workers(self) -> int:
        return max(1, int(self.model_config.get("minWorkers") or 1))

    @property
    def report_accuracy(self) -> float | None:
        """The validation accuracy its fine-tuning report states (provenance.json's training record)."""
        value = (self.provenance.get("training") or {}).get("validation_accuracy")
        return None if value is None else float(value)


def _yaml(text: str) -> dict:
    if not text:
        return {}
    import yaml  # only where an archive is read, not in the UI's imports

    return yaml.safe_load(text) or {}


def version_key(version: str) -> tuple:
    """Numeric order ("2" > "1.0" > "0.9"); anything else sorts first, by text."""
    parts = str(version).split(".")
    if all(p.isdigit() for p in parts):
        return (1, *map(int, parts))
    return (0, str(version))


def store_archives(store: Path) -> list[Archive]:
    """Every readable archive directly in the store (what TorchServe's load_models=all loads)."""
    found = []
    for path in sorted(Path(store).glob("*.mar")):
        try:
            found.append(Archive.read(path))
        except VersionError:
            continue
    return found


def next_version(store: Path, model: str, replacing: Path | None = None) -> str:
    """One above the highest version of `model` in the store (FIRST_VERSION if none); `replacing`, the archive
    a build is about to overwrite, does not count."""
    replacing = Path(replacing).resolve() if replacing else None
    majors = [
        version_key(a.version)[1]
        for a in store_archives(store)
        if a.model == model and a.path.resolve() != replacing and version_key(a.version)[0] == 1
    ]
    return str(max(majors) + 1) if majors else FIRST_VERSION


def versioned_name(model: str, version: str) -> str:
    if not VERSION.fullmatch(version):
        raise VersionError(f"version {version!r}: use letters, digits, '.', '_' or '-'")
    return f"{model}-v{version}.mar"


def find_archive(store: Path, model: str, version: str) -> Archive | None:
    return next((a for a in store_archives(store) if a.model == model and a.version == version), None)


def report_files(archive: Path) -> list[Path]:
    """The fine-tuning report files beside an archive (<stem>.report.json, .report.md, .confusion.png)."""
    return [
        archive.with_name(archive.stem + s) for s in REPORT_SUFFIXES if archive.with_name(archive.stem + s).is_file()
    ]


def into_store(archive: Archive, store: Path) -> Path:
    """The archive (and its report files) in the store under its versioned name: copied from elsewhere,
    renamed if it is in the store under another name (two files of one version would clash at start)."""
    store = Path(store).resolve()
    target = store / versioned_name(archive.model, archive.version)
    source = archive.path.resolve()
    if source == target:
        return target
    if target.exists():
        raise VersionError(
            f"{target} already exists: {archive.model} version {archive.version} is in the store; "
            "build with another --version"
        )
    move = source.parent == store
    for extra in [source, *report_files(source)]:
        dest = target.with_name(target.stem + extra.name[len(source.stem) :])
        shutil.move(extra, dest) if move else shutil.copy2(extra, dest)
    return target


def retire_archive(archive: Path) -> Path:
    """Move a retired version's archive (and reports) out of TorchServe's sight, keeping them."""
    folder = archive.parent / RETIRED_DIR
    folder.mkdir(exist_ok=True)
    for path in [archive, *report_files(archive)]:
        shutil.move(path, folder / path.name)
    return folder / archive.name
