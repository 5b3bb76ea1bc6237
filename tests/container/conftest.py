"""`make container-test`: the project's images built once per session, figures collected for docs/DEPLOY.md.

Other container tests (e.g. memory limits) reuse `built_image` and start their own containers with
`podman.start_container(name, built_image.image, "--memory", "2g", ...)`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.container import podman


def record(figures: dict, key: str, build: podman.Build) -> None:
    """An image's size in bytes (`<key>_image_bytes`), its build time and its largest layers."""
    figures[f"{key}_image_bytes"] = build.size_bytes
    figures[f"{key}_image_gb"] = round(build.size_bytes / 1e9, 3)
    figures[f"{key}_build_s"] = round(build.seconds, 1)
    figures[f"{key}_largest_layers"] = podman.largest_layers(build.image)
    print(f"\nbuilt {build.image} in {build.seconds:.0f} s, {build.size_bytes / 1e9:.2f} GB")


@pytest.fixture(scope="session")
def torch_args() -> dict[str, str]:
    """The serving image's CPU torch from what this machine has (podman.cpu_torch_args)."""
    return podman.cpu_torch_args()


@pytest.fixture(scope="session")
def built_image(output_dir: Path, container_figures: dict, torch_args: dict[str, str]) -> podman.Build:
    """The serving image (the Dockerfile's default target): Docker format (as `docker build` makes it),
    WEIGHTS=random (no download), CPU torch, the stand-in base."""
    if not shutil.which("podman"):
        pytest.fail("podman is missing: `make container-test` installs it (deploy/podman/prepare-base.sh)")
    exists = podman.podman("image", "exists", podman.BASE_IMAGE, check=False).returncode == 0
    assert exists, f"{podman.BASE_IMAGE} is missing: run deploy/podman/prepare-base.sh (make container-test does)"
    build = podman.build_image(output_dir / "container-build.log", WEIGHTS="random", **torch_args)
    container_figures["torch_build_args"] = torch_args
    container_figures["build_cached"] = "Using cache" in build.log.read_text()
    record(container_figures, "serving", build)
    return build


@pytest.fixture(scope="session")
def ui_image(output_dir: Path, container_figures: dict) -> podman.Build:
    """The UI image (the Dockerfile's `ui` target), as compose.yaml's ui service builds it."""
    build = podman.build_image(output_dir / "container-build-ui.log", podman.UI_IMAGE, target="ui")
    record(container_figures, "ui", build)
    return build


@pytest.fixture(scope="session")
def container_figures(output_dir: Path):
    """Measured figures of this run, written to test-output/container-test.json at the end."""
    figures: dict = {}
    yield figures
    (output_dir / "container-test.json").write_text(json.dumps(figures, indent=2) + "\n")
