"""The archive's model card: the typed provenance record and its provenance.json."""

from __future__ import annotations

import json

import pytest

from handler.model_card import PROVENANCE_FILE, ModelCard, Preprocessing, Provenance

RECORD = {
    "arch": "resnet18",
    "model_sha256": "a" * 64,
    "num_classes": 2,
    "torch": "2.0",
    "torchvision": "0.1",
    "weights": "random(seed=3)",
    "weights_sha256": "b" * 64,
}


def test_provenance_round_trips_the_keys_the_builder_writes():
    provenance = Provenance.from_dict(RECORD)
    assert provenance.random_weights and provenance.quantized_engine is None
    assert provenance.to_dict() == RECORD  # unset optional facts are left out


def test_provenance_from_a_newer_builder_still_loads():
    provenance = Provenance.from_dict({**RECORD, "a_fact_from_the_future": "onnx"})
    assert provenance == Provenance.from_dict(RECORD)


def test_provenance_needs_its_required_facts():
    with pytest.raises(TypeError):
        Provenance.from_dict({k: v for k, v in RECORD.items() if k != "model_sha256"})


def test_not_random_weights():
    assert not Provenance.from_dict({**RECORD, "weights": "IMAGENET1K_V1"}).random_weights


def test_card_writes_the_same_provenance_json_it_reads(tmp_path):
    card = ModelCard(["cat", "dog"], Preprocessing(), Provenance.from_dict(RECORD))
    card.write(tmp_path)
    text = (tmp_path / PROVENANCE_FILE).read_text()
    assert text == json.dumps(RECORD, indent=2, sort_keys=True) + "\n"
    assert ModelCard.read(tmp_path) == card and ModelCard.read(tmp_path).random_weights
