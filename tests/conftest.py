"""Session fixtures: a random-weights archive and a real TorchServe on free ports."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handler.model_card import MODEL_FILE, ModelCard  # noqa: E402
from handler.settings import HandlerSettings  # noqa: E402
from scripts import build_archive  # noqa: E402
from service.local.torchserve import TorchServe  # noqa: E402
from service.names import DEFAULT_MODEL as MODEL  # noqa: E402
from service.names import MODEL_CONFIG  # noqa: E402

# Batching on, with a delay long enough that concurrent test requests share a batch.
TEST_MODEL_CONFIG = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 150}
# What the test archives' handler runs with (the project's model-config.yaml over the defaults):
# the answers' default top-k, the pixel and byte limits.
SERVED = HandlerSettings.from_yaml(yaml.safe_load(MODEL_CONFIG.read_text()))


@pytest.fixture(scope="session")
def output_dir() -> Path:
    path = ROOT / "test-output"
    path.mkdir(exist_ok=True)
    return path


def build_test_archive(store: Path, model_config: dict | None = None, **options: str) -> Path:
    """A random-weights archive from the project's own model-config.yaml with some keys replaced."""
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    config.update(model_config or {})
    config_file = store.parent / f"{store.name}-model-config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    argv = ["--random-weights", "--export-path", str(store), "--model-config", str(config_file), "--force"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", value]
    build_archive.build(build_archive.parse_args(argv))
    return store


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    return build_test_archive(tmp_path_factory.mktemp("model_store"), TEST_MODEL_CONFIG)


@pytest.fixture(scope="session")
def torchserve(model_store, tmp_path_factory):
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("run"), model_store) as server:
        yield server


@pytest.fixture(scope="session")
def local_model(model_store, tmp_path_factory):
    """The archive's own model and card, run in this process, to check the server's answers."""
    folder = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(model_store / f"{MODEL}.mar") as z:
        z.extractall(folder)
    return torch.jit.load(str(folder / MODEL_FILE)).eval(), ModelCard.read(folder)


@pytest.fixture(scope="session")
def client(torchserve):
    return torchserve.client()
