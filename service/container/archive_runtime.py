"""Which runtime packages the archives in a model store need, for the serving image's install step.

The Dockerfile's builder stage prints them as requirement lines at requirements.txt's pins
(`python -m service.container.archive_runtime model_store requirements.txt`) and the serving stage
installs exactly those: ONNX Runtime or OpenVINO only when an archive runs on it, nothing for
TorchScript archives."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from handler.model_card import PROVENANCE_FILE, Provenance
from handler.runtime import PACKAGES


def archive_runtime(archive: Path) -> str:
    """The runtime an archive's provenance.json names (TorchScript when it names none)."""
    with zipfile.ZipFile(archive) as contents:
        return Provenance.from_dict(json.loads(contents.read(PROVENANCE_FILE))).served_runtime


def runtime_packages(model_store: Path) -> list[str]:
    """The pip names of the runtimes the store's archives run on, sorted, each once."""
    runtimes = {archive_runtime(path) for path in Path(model_store).glob("*.mar")}
    return sorted({PACKAGES[runtime] for runtime in runtimes if runtime in PACKAGES})


def pinned(packages: list[str], requirements: Path) -> list[str]:
    """Each package's line in a requirements file ("onnxruntime==1.32.0"); a package it does not pin is an error."""
    pins = {line.split("==")[0].strip(): line.strip() for line in requirements.read_text().splitlines() if "==" in line}
    missing = [package for package in packages if package not in pins]
    if missing:
        raise SystemExit(f"{requirements} pins no version of {', '.join(missing)}")
    return [pins[package] for package in packages]


if __name__ == "__main__":
    if len(sys.argv) != 3 or not Path(sys.argv[1]).is_dir() or not Path(sys.argv[2]).is_file():
        sys.exit("usage: python -m service.container.archive_runtime MODEL_STORE REQUIREMENTS")
    for line in pinned(runtime_packages(Path(sys.argv[1])), Path(sys.argv[2])):
        print(line)
