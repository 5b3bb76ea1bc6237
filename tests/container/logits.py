"""Logits of an archive's model for photo files, computed as the handler computes them (decode, preprocess,
the runtime's model as served), printed as JSON with the torch version. tests/container/test_container.py runs
it inside the serving image and on this machine to compare the two torch builds:
    python tests/container/logits.py ARCHIVE PHOTO...
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from handler.model_card import MODEL_FILE, ModelCard
from handler.preprocess import model_input
from handler.runtime import load_model
from handler.settings import DEFAULTS


def logits(archive: Path, photos: list[Path]) -> list[list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(archive) as contents:
            contents.extractall(folder)
        card = ModelCard.read(Path(folder))
        model = load_model(Path(folder) / MODEL_FILE, card.provenance)
        inputs = [model_input(photo.read_bytes(), card.preprocessing, DEFAULTS.max_pixels) for photo in photos]
        return model(torch.stack(inputs)).tolist()


if __name__ == "__main__":
    archive, *photos = (Path(arg) for arg in sys.argv[1:])
    print(json.dumps({"torch": torch.__version__, "logits": logits(archive, photos)}))
