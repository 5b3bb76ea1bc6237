"""Model scores to the top-k answer of each request."""

from __future__ import annotations

import torch


def top_k(logits: torch.Tensor, ks: list[int], labels: list[str]) -> list[list[dict[str, object]]]:
    """Softmax each row and keep its own k best classes, highest probability first."""
    probabilities = torch.softmax(logits.float(), dim=1)
    values, indices = probabilities.topk(max(ks), dim=1)
    answers = []
    for row_values, row_indices, k in zip(values.tolist(), indices.tolist(), ks, strict=True):
        answers.append(
            [
                {"label": labels[i], "index": i, "probability": round(p, 6)}
                for p, i in zip(row_values[:k], row_indices[:k], strict=True)
            ]
        )
    return answers
