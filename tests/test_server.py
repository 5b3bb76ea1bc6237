"""Integration tests against a real TorchServe serving a random-weights archive."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch

from handler.images import decode_image
from handler.model_card import ModelCard
from handler.preprocess import to_tensor
from scripts.sample_photos import photos
from tests.conftest import MODEL

pytestmark = pytest.mark.server


def test_predictions_on_real_photos(client):
    for name, path in photos().items():
        response = client.predict(MODEL, path.read_bytes(), filename=path.name)
        assert response.status_code == 200, (name, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        answer = response.json()
        predictions = answer["predictions"]
        assert len(predictions) == 3
        assert [p["probability"] for p in predictions] == sorted((p["probability"] for p in predictions), reverse=True)
        for p in predictions:
            assert 0 <= p["probability"] <= 1 and isinstance(p["label"], str) and 0 <= p["index"] < 1000
        assert answer["model"]["name"] == MODEL
        assert answer["model"]["weights"] == "random(seed=0)" and answer["model"]["random_weights"] is True
        assert "random weights" in answer["warning"]
