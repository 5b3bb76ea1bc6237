"""The results of a batch as plain rows: what the table shows, the export writes and the review walks.

No Streamlit here. One row per photo, in upload order; a photo whose top-1 probability is below the
threshold the person set is "uncertain" (a photo that failed is not: it has no answer to doubt).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ui.logic import Outcome

DEFAULT_THRESHOLD = 0.5  # top-1 probability below which a photo is marked uncertain
CHART_LABELS = 12  # the chart's bars: the most frequent top labels, the rest summed as OTHER
OTHER = "(other labels)"


@dataclass(frozen=True)
class ResultRow:
    """One photo's result: its name (with its folder path for a folder upload), the sha256 of its bytes,
    its top-k labels and probabilities (highest first), the model that answered, or its error."""

    position: int  # upload order, from 0
    file: str
    sha256: str
    labels: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    model: str | None = None
    version: str | None = None
    runtime: str | None = None
    precision: str | None = None
    error: str | None = None

    @property
    def top_label(self) -> str | None:
        return self.labels[0] if self.labels else None

    @property
    def top_probability(self) -> float | None:
        return self.probabilities[0] if self.probabilities else None

    def uncertain(self, threshold: float) -> bool:
        return self.error is None and self.top_probability is not None and self.top_probability < threshold


def photo_digest(data: bytes) -> str:
    """A photo's sha256: computed once per page run (ui/app.py) for its session key and its row."""
    return hashlib.sha256(data).hexdigest()


def result_row(position: int, name: str, digest: str, outcome: Outcome | None) -> ResultRow:
    """The row of one photo; a photo not classified yet has neither labels nor an error."""
    if outcome is None:
        return ResultRow(position, name, digest)
    model = outcome.model or {}
    return ResultRow(
        position,
        name,
        digest,
        labels=[str(p["label"]) for p in outcome.predictions],
        probabilities=[float(p["probability"]) for p in outcome.predictions],
        model=model.get("name"),
        version=_text(model.get("version")),
        runtime=model.get("runtime"),
        precision=model.get("precision"),
        error=plain_error(outcome.error) if outcome.error else None,
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def plain_error(message: str) -> str:
    """The page's Markdown message as plain text (the bold file names lose their asterisks)."""
    return message.replace("**", "").replace("`", "")


def result_rows(
    photos: Sequence[tuple[str, bytes]], outcomes: Sequence[Outcome | None], digests: Sequence[str]
) -> list[ResultRow]:
    """One row per photo, in order; digests[i] is photo_digest of photos[i]'s bytes."""
    return [
        result_row(i, name, digest, outcome)
        for i, ((name, _), outcome, digest) in enumerate(zip(photos, outcomes, digests, strict=True))
    ]


def classified_count(rows: Sequence[ResultRow]) -> int:
    """Photos with an answer (the "N of M classified" the page keeps showing)."""
    return sum(1 for row in rows if row.labels)


def uncertain_rows(rows: Sequence[ResultRow], threshold: float) -> list[ResultRow]:
    return [row for row in rows if row.uncertain(threshold)]


def label_counts(rows: Sequence[ResultRow], most: int = CHART_LABELS) -> list[tuple[str, int]]:
    """(top label, photos) for the chart, most frequent first (ties by name); beyond `most` labels the
    rest are summed as OTHER, last."""
    counts = Counter(row.top_label for row in rows if row.top_label is not None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) <= most:
        return ranked
    kept = ranked[: most - 1]
    return kept + [(OTHER, sum(n for _, n in ranked[most - 1 :]))]


def table_records(rows: Sequence[ResultRow], threshold: float) -> list[dict[str, object]]:
    """The table's columns: file, top label, its probability, the other labels, uncertain, error."""
    return [
        {
            "#": row.position + 1,
            "file": row.file,
            "top label": row.top_label or "",
            "probability": row.top_probability,
            "other labels": ", ".join(
                f"{label} {p * 100:.1f}%" for label, p in zip(row.labels[1:], row.probabilities[1:], strict=True)
            ),
            "uncertain": row.uncertain(threshold),
            "error": row.error or "",
        }
        for row in rows
    ]
