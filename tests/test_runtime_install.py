"""The runtime path works with requirements.txt alone: nothing on it imports a dev-only package.

Instead of a second virtualenv, the checks run in a Python whose imports of the dev-only packages
(requirements-dev.txt) fail: a sitecustomize.py on PYTHONPATH installs a meta-path blocker before
anything else is imported. The first test proves the blocker is active.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision import models

from handler.model_card import MODEL_FILE, ModelCard
from service.archive.sources import state_dict_sha256
from service.names import ROOT
from service.photos import photos

# What the runtime path must not import: what requirements-dev.txt adds over requirements.txt (and
# peers tried beside it), and matplotlib, which is installed for Captum's explanations only (loaded on a
# worker's first explanation, never by the builder, client, server or UI).
DEV_ONLY = ("matplotlib", "skimage", "pytest", "_pytest", "flask", "playwright", "litserve")

BLOCKER = f'''
"""Make the dev-only packages unimportable in this interpreter (tests/test_runtime_install.py)."""
import sys

BLOCKED = {DEV_ONLY!r}


class DevOnlyBlocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is dev-only (blocked by tests/test_runtime_install.py)", name=name)
        return None


sys.meta_path.insert(0, DevOnlyBlocker())
'''

# What a runtime-only install runs: the archive builder, the handler, the server lifecycle, the client, the UI.
RUNTIME_MODULES = (
    "service.archive",
    "handler.torchserve_handler",
    "service.local.torchserve",
    "service.local.ui_launch",
    "service.client.api",
    "ui.logic",
)


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory) -> dict[str, str]:
    """Environment for a subprocess that can import only what requirements.txt installs."""
    site = tmp_path_factory.mktemp("runtime-site")
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "PYTHONNOUSERSITE": "1"}


def run(env: dict[str, str], *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_the_blocker_is_active(runtime_env):
    """Installed here, blocked there: so the tests below would fail if the runtime path needed them."""
    for name in ("matplotlib", "skimage", "pytest", "flask"):
        assert importlib.util.find_spec(name) is not None, f"{name} should be installed in the dev venv"
        result = run(runtime_env, "-c", f"import {name}")
        assert result.returncode != 0 and "is dev-only (blocked" in result.stderr, result.stderr


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_runtime_modules_import_without_dev_packages(runtime_env, module):
    result = run(runtime_env, "-c", f"import {module}", timeout=180)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def weights_and_photos(tmp_path_factory) -> tuple[Path, Path, str]:
    """A state dict saved from a random-weights model (as a user's resnet18-f37072fd.pth would
    be) and a folder of the user's own photos (here: copies of the sample photos, plus a note)."""
    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(11)
    model = models.resnet18().eval()
    weights = folder / "resnet18-user.pth"
    torch.save(model.state_dict(), weights)
    album = folder / "album"
    album.mkdir()
    for name, path in photos().items():
        shutil.copy(path, album / f"{name}{path.suffix}")
    (album / "notes.txt").write_text("not a photo: the builder skips it")
    return weights, album, state_dict_sha256(model)


def test_int8_archive_from_a_weights_file_with_runtime_packages_only(runtime_env, weights_and_photos, tmp_path):
    weights, album, weights_sha256 = weights_and_photos
    result = run(
        runtime_env,
        "scripts/build_archive.py",
        *("--weights", str(weights), "--quantize", "int8", "--calibration", str(album)),
        *("--export-path", str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    archive = tmp_path / "resnet18.mar"
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "unpacked")
    card = ModelCard.read(tmp_path / "unpacked")
    provenance = card.provenance
    assert provenance.weights == "file:resnet18-user.pth" and provenance.weights_sha256 == weights_sha256
    assert provenance.quantization == "int8" and provenance.quantized_engine == "x86"
    photo_count = len(photos())
    assert provenance.calibration == f"post-training static, {photo_count * 9} photos from album and crops"
    card.verify_model_file(tmp_path / "unpacked" / MODEL_FILE)
    torch.backends.quantized.engine = "x86"
    model = torch.jit.load(str(tmp_path / "unpacked" / MODEL_FILE))
    modules = {m.original_name for m in model.modules()}
    assert {"Quantize", "DeQuantize", "ConvReLU2d", "LinearPackedParams"} <= modules, sorted(modules)
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_int8_without_calibration_photos_says_what_to_pass(runtime_env, weights_and_photos, tmp_path):
    """The sample photos are dev-only: without --calibration the build stops and names the flag."""
    weights, _, _ = weights_and_photos
    result = run(
        runtime_env,
        "scripts/build_archive.py",
        *("--weights", str(weights), "--quantize", "int8", "--export-path", str(tmp_path)),
        timeout=180,
    )
    assert result.returncode == 2, result.stderr
    assert "--calibration /path/to/photos" in result.stderr and "requirements-dev.txt" in result.stderr
    assert not list(tmp_path.glob("*.mar"))

