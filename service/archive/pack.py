"""TorchScript compilation and the .mar itself (torch-model-archiver)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from handler.model_card import ModelCard
from service.archive.errors import BuildError
from service.names import HANDLER_PACKAGE

HANDLER_ENTRY = HANDLER_PACKAGE / "torchserve_handler.py"


def script_and_check(model: torch.nn.Module, crop: int) -> torch.jit.ScriptModule:
    """Compile with torch.jit.script and prove it computes what the eager model computes
    (for an int8 model: the scripted int8 model against the eager int8 model)."""
    scripted = torch.jit.script(model)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(2, 3, crop, crop, generator=generator)
    with torch.inference_mode():
        expected, actual = model(batch), scripted(batch)
    if not torch.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        raise BuildError(f"scripted model differs from eager (max diff {(expected - actual).abs().max():.3g})")
    return scripted


def load_torchscript(path: Path, num_classes: int, crop: int) -> torch.jit.ScriptModule:
    """The user's TorchScript file, checked to give one score per label at the crop size."""
    if not path.is_file():
        raise BuildError(f"TorchScript file {path} does not exist")
    try:
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise BuildError(f"{path} is not a TorchScript model ({e})")
    with torch.inference_mode():
        out = scripted(torch.zeros(1, 3, crop, crop))
    if out.shape != (1, num_classes):
        raise BuildError(f"{path} gives output of shape {tuple(out.shape)}, but the labels name {num_classes} classes")
    return scripted


def save_torchscript(scripted: torch.jit.ScriptModule, path: Path) -> None:
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    path.write_bytes(buffer.getvalue())


def pack(
    model_file: Path,
    card: ModelCard,
    model_name: str,
    version: str,
    model_config: Path,
    export_path: Path,
    model_files: list[Path] | None = None,
) -> Path:
    """torch-model-archiver over the model file (and the exported ones beside it), the model card,
    the handler package and model-config.yaml; returns the archive's path."""
    with tempfile.TemporaryDirectory(prefix="build-archive-") as tmp:
        stage = Path(tmp) / "extra"
        stage.mkdir()
        card.write(stage)
        for path in model_files or []:
            shutil.copy(path, stage / path.name)
        shutil.copytree(HANDLER_PACKAGE, stage / "handler", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return run_archiver(
            model_name, version, HANDLER_ENTRY, model_config, export_path,
            "--serialized-file", str(model_file), "--extra-files", str(stage),
        )


def run_archiver(
    model_name: str, version: str, handler: Path, model_config: Path, export_path: Path, *more: str
) -> Path:
    """torch-model-archiver (this interpreter's) into export_path; returns the archive's path."""
    export_path.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).with_name("torch-model-archiver")),
        *("--model-name", model_name, "--version", version, "--handler", str(handler)),
        *("--config-file", str(model_config), "--export-path", str(export_path), "--force", *more),
    ]
    # The archiver stages files in $TMPDIR/<model name> and deletes that folder first: two builds
    # of one model name at once (test sessions, the benchmark) would clobber each other's files.
    with tempfile.TemporaryDirectory(prefix="archiver-") as scratch:
        subprocess.run(command, check=True, env={**os.environ, "TMPDIR": scratch})
    return export_path / f"{model_name}.mar"
