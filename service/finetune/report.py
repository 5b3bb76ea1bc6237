"""The training report beside the archive: per-class precision and recall, the confusion matrix, the
hardest validation images and every validation prediction, as JSON and Markdown, plus a PNG plot.

The files are named <model>.report.json, <model>.report.md and <model>.confusion.png: plain files
next to the .mar (TorchServe's load_models=all tries every folder in the model store as a model,
so the report must not be a folder there). The PNG needs matplotlib (requirements.txt has it, for Captum):
where it is missing the report says so and the matrix is still in the JSON and the Markdown.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from service.finetune.dataset import Dataset

HARDEST = 12


def per_class(confusion: torch.Tensor, classes: list[str]) -> list[dict[str, object]]:
    rows = []
    for i, name in enumerate(classes):
        tp, predicted, actual = int(confusion[i, i]), int(confusion[:, i].sum()), int(confusion[i].sum())
        rows.append(
            {
                "class": name,
                "index": i,
                "precision": round(tp / predicted, 4) if predicted else None,
                "recall": round(tp / actual, 4) if actual else None,
                "support": actual,
            }
        )
    return rows


def evaluation(dataset: Dataset, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, object]:
    """Everything the report says about the validation set, from the final model's logits."""
    probs = logits.softmax(1)
    predicted = probs.argmax(1)
    n = len(dataset.classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(labels.tolist(), predicted.tolist(), strict=True):
        confusion[t, p] += 1
    predictions = [
        {
            "path": example.path.relative_to(dataset.root).as_posix(),
            "true": dataset.classes[int(t)],
            "predicted": dataset.classes[int(p)],
            "probability": round(float(probs[i, p]), 4),
            "true_probability": round(float(probs[i, t]), 4),
        }
        for i, (example, t, p) in enumerate(zip(dataset.val, labels, predicted, strict=True))
    ]
    return {
        "accuracy": round(float((predicted == labels).float().mean()), 6),
        "loss": round(float(torch.nn.functional.cross_entropy(logits, labels)), 6),
        "per_class": per_class(confusion, dataset.classes),
        "confusion": {"rows": "true class", "columns": "predicted class", "matrix": confusion.tolist()},
        "hardest": sorted(predictions, key=lambda p: p["true_probability"])[:HARDEST],
        "predictions": predictions,
    }


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path) -> str | None:
    """The confusion matrix as a PNG; None if written, else why not (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r requirements-dev.txt, or pip install matplotlib)"
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    ax.set_title("Validation confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    cells = [header, ["---"] * len(header), *([("" if v is None else str(v)) for v in row] for row in rows)]
    return ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in cells]


def markdown(report: dict) -> str:
    ev, classes, training = report["evaluation"], report["classes"], report["training"]
    data = training["dataset"]
    lines = [
        f"# Fine-tuning report: {report['model_name']} {report['version']}",
        "",
        f"- archive: `{report['archive']}`",
        f"- base weights: {training['base_weights']} ({training['arch']})",
        f"- dataset: `{data['folder']}`, {data['images']} images, fingerprint `{data['fingerprint']}`",
        f"- split: {data['split']}",
        f"- validation accuracy: **{100 * ev['accuracy']:.1f} %** (loss {ev['loss']:.4f}) "
        f"on {len(ev['predictions'])} images",
        f"- training time: {report['seconds']:.1f} s",
        f"- confusion matrix plot: {report['confusion_png'] or report['confusion_png_missing']}",
        "",
        "## Per class",
        "",
        *_table(
            ["class", "index", "train", "val", "precision", "recall"],
            [
                [
                    r["class"],
                    r["index"],
                    training["classes"][r["class"]]["train"],
                    r["support"],
                    r["precision"],
                    r["recall"],
                ]
                for r in ev["per_class"]
            ],
        ),
        "",
        "## Confusion matrix (rows: true class, columns: predicted class)",
        "",
        *_table(
            ["true \\ predicted", *classes],
            [[c, *row] for c, row in zip(classes, ev["confusion"]["matrix"], strict=True)],
        ),
        "",
        "## Hardest validation images (lowest probability of the true class)",
        "",
        *_table(
            ["image", "true", "predicted", "p(true)", "p(predicted)"],
            [
                [f"`{h['path']}`", h["true"], h["predicted"], h["true_probability"], h["probability"]]
                for h in ev["hardest"]
            ],
        ),
    ]
    unreadable = report["unreadable"]
    if unreadable:
        lines += ["", f"## Skipped files ({len(unreadable)}, not decodable by the handler)", ""]
        lines += [f"- `{u['path']}`: {u['reason']}" for u in unreadable]
    return "\n".join(lines) + "\n"


def report_paths(export_path: Path, model_name: str) -> dict[str, Path]:
    return {
        "json": export_path / f"{model_name}.report.json",
        "markdown": export_path / f"{model_name}.report.md",
        "png": export_path / f"{model_name}.confusion.png",
    }


def write_report(report: dict, export_path: Path, model_name: str) -> dict[str, Path]:
    paths = report_paths(export_path, model_name)
    missing = plot_confusion(report["evaluation"]["confusion"]["matrix"], report["classes"], paths["png"])
    report["confusion_png"] = None if missing else paths["png"].name
    report["confusion_png_missing"] = f"not written: {missing}" if missing else None
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(markdown(report))
    if missing:
        paths["png"].unlink(missing_ok=True)  # an older run's plot would not match this report
        del paths["png"]
    return paths
