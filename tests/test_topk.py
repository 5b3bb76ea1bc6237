"""Top-k: softmax fractions, per-row k, sorted, labels by index."""

from __future__ import annotations

import torch

from handler.topk import top_k

LABELS = ["cat", "dog", "fish", "bird"]


def test_softmax_sorted_and_per_row_k():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 5.0]])
    rows = top_k(logits, [3, 1], LABELS)
    assert [p["label"] for p in rows[0]] == ["dog", "fish", "cat"]
    assert [p["index"] for p in rows[0]] == [1, 2, 0]
    assert rows[1] == [{"label": "bird", "index": 3, "probability": round(torch.softmax(logits[1], 0)[3].item(), 6)}]
    expected = torch.softmax(logits[0], 0)
    for p in rows[0]:
        assert abs(p["probability"] - expected[p["index"]].item()) < 1e-6
        assert 0 <= p["probability"] <= 1


def test_all_classes_sum_to_one():
    logits = torch.randn(2, 4)
    rows = top_k(logits, [4, 4], LABELS)
    for row in rows:
        assert abs(sum(p["probability"] for p in row) - 1) < 1e-5
        assert sorted(p["index"] for p in row) == [0, 1, 2, 3]
