"""`make container-test`: the project's image built once per session, figures collected for docs/DEPLOY.md.

Other container tests (e.g. memory limits) reuse `built_image` and start their own containers with
`podman.start_container(name, built_image.image, "--memory", "2g", ...)`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.container import podman


@pytest.fixture(scope="session")
def built_image(output_dir: Path, container_figures: dict) -> podman.Build:
    """Docker format (as `docker build` makes it), WEIGHTS=random (no download), the default torch
    wheel, the stand-in base."""
    if not shutil.which("podman"):
        pytest.fail("podman is missing: `make container-test` installs it (deploy/podman/prepare-base.sh)")
    exists = podman.podman("image", "exists", podman.BASE_IMAGE, check=False).returncode == 0
    assert exists, f"{podman.BASE_IMAGE} is missing: run deploy/podman/prepare-base.sh (make container-test does)"
    build = podman.build_image(output_dir / "container-build.log", WEIGHTS="random")
    container_figures["build_s"] = round(build.seconds, 1)
    container_figures["build_cached"] = "Using cache" in build.log.read_text()
    container_figures["image_bytes"] = build.size_bytes
    container_figures["image_gb"] = round(build.size_bytes / 1e9, 2)
    print(f"\nbuilt {build.image} in {build.seconds:.0f} s, {build.size_bytes / 1e9:.2f} GB")
    return build


@pytest.fixture(scope="session")
def container_figures(output_dir: Path):
    """Measured figures of this run, written to test-output/container-test.json at the end."""
    figures: dict = {}
    yield figures
    (output_dir / "container-test.json").write_text(json.dumps(figures, indent=2) + "\n")
