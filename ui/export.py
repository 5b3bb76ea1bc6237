"""Every result as a file to take away: CSV for a spreadsheet, JSON for another program.

One row (or object) per photo in upload order, UTF-8, numbers as numbers (probabilities 0..1, not
"70.0%"), an empty cell / null where there is nothing (a failed photo's labels, a model field the
server did not report). No Streamlit here; ui/results_view.py puts these behind download buttons.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from ui.results import ResultRow

MODEL_COLUMNS = ("model", "version", "runtime", "precision")


def csv_columns(k: int) -> list[str]:
    ranked = [name for rank in range(1, k + 1) for name in (f"label_{rank}", f"probability_{rank}")]
    return ["file", "sha256", *ranked, *MODEL_COLUMNS, "uncertain", "error"]


def to_csv(rows: Sequence[ResultRow], threshold: float) -> bytes:
    """A header, then one line per photo; as many label/probability column pairs as the longest top-k."""
    k = max((len(row.labels) for row in rows), default=0)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(k))
    for row in rows:
        ranked: list[object] = []
        for rank in range(k):
            has = rank < len(row.labels)
            ranked += [row.labels[rank] if has else "", row.probabilities[rank] if has else ""]
        model = [getattr(row, name) or "" for name in MODEL_COLUMNS]
        uncertain = str(row.uncertain(threshold)).lower() if row.labels else ""
        writer.writerow([row.file, row.sha256, *ranked, *model, uncertain, row.error or ""])
    return buffer.getvalue().encode("utf-8")


def to_json(rows: Sequence[ResultRow], threshold: float) -> bytes:
    """{"threshold": t, "photos": [{"file", "sha256", "predictions": [{"label", "probability"}], "model":
    {...}, "uncertain", "error"}]}: the same facts as the CSV, the top-k as a list."""
    photos = [
        {
            "file": row.file,
            "sha256": row.sha256,
            "predictions": [
                {"label": label, "probability": p} for label, p in zip(row.labels, row.probabilities, strict=True)
            ],
            "model": {name: getattr(row, name) for name in MODEL_COLUMNS},
            "uncertain": row.uncertain(threshold) if row.labels else None,
            "error": row.error,
        }
        for row in rows
    ]
    text = json.dumps({"threshold": threshold, "photos": photos}, ensure_ascii=False, indent=1)
    return text.encode("utf-8")
