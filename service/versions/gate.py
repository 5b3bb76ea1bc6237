"""The gate: a labelled folder sent through the served API to the default and the candidate version
(/predictions/{model}/{version}), compared side by side; the candidate passes if its accuracy is at
least the default's minus a tolerance. Measured as clients see the models, not in this process."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from service.client.api import TorchServeClient
from service.versions.store import VersionError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif"}
MOST_WRONG = 3


def labelled_folder(folder: Path) -> list[tuple[Path, str]]:
    """(image, class) for every image in an ImageFolder layout (one sub-folder per class)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VersionError(f"evaluation folder {folder} does not exist")
    examples = [
        (path, d.name)
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".")
        for path in sorted(d.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    if not examples:
        raise VersionError(f"{folder} holds no labelled images (one sub-folder of images per class)")
    return examples


def held_out_split(report: Path) -> list[tuple[Path, str]]:
    """The validation images a fine-tuning report recorded (its data folder must still be there)."""
    data = json.loads(Path(report).read_text())
    root = data.get("data_root")
    if not root:
        raise VersionError(f"{report} does not record its data folder: give the gate one with --eval DIR")
    examples = [(Path(root) / p["path"], p["true"]) for p in data["evaluation"]["predictions"]]
    missing = [str(path) for path, _ in examples if not path.is_file()]
    if missing or not examples:
        raise VersionError(f"the held-out images of {report} are gone ({', '.join(missing[:3])}...): use --eval DIR")
    return examples


@dataclass
class Figures:
    """One version's answers on the evaluation images."""

    version: str
    images: int
    accuracy: float
    recall: dict[str, float | None]
    most_wrong: list[tuple[str, int]]
    p50_ms: float
    failed: int  # answers other than 200
    predicted: list[str] = field(repr=False)


def run_version(
    client: TorchServeClient, model: str, version: str, examples: list[tuple[Path, str]], classes: list[str]
) -> Figures:
    predicted, latencies, failed = [], [], 0
    for path, _ in examples:
        started = time.perf_counter()
        response = client.predict(model, path.read_bytes(), filename=path.name, version=version)
        latencies.append(1000 * (time.perf_counter() - started))
        if response.status_code != 200:
            failed += 1
            predicted.append("")
            continue
        answer = response.json()
        if str(answer["model"]["version"]) != version:
            raise VersionError(f"asked {model} version {version}, answered by {answer['model']['version']}")
        predicted.append(answer["predictions"][0]["label"])
    truth = [label for _, label in examples]
    wrong = Counter(t for t, p in zip(truth, predicted, strict=True) if t != p)
    support = Counter(truth)
    recall = {c: (round(1 - wrong[c] / support[c], 4) if support[c] else None) for c in classes}
    return Figures(
        version=version,
        images=len(examples),
        accuracy=round(sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(examples), 4),
        recall=recall,
        most_wrong=[(c, n) for c, n in wrong.most_common(MOST_WRONG)],
        p50_ms=round(statistics.median(latencies), 1),
        failed=failed,
        predicted=predicted,
    )


@dataclass
class GateResult:
    model: str
    default: Figures | None
    candidate: Figures
    agreement: float | None
    tolerance: float
    classes: list[str]
    passed: bool
    reason: str

    def summary(self) -> dict:
        """What the version record keeps (no per-image predictions)."""

        def figures(f: Figures | None) -> dict | None:
            return None if f is None else {k: v for k, v in asdict(f).items() if k != "predicted"}

        return {
            "default": figures(self.default),
            "candidate": figures(self.candidate),
            "agreement": self.agreement,
            "tolerance": self.tolerance,
            "classes": self.classes,
            "passed": self.passed,
            "reason": self.reason,
        }


def evaluate(
    client: TorchServeClient,
    model: str,
    default: str | None,
    candidate: str,
    examples: list[tuple[Path, str]],
    classes: list[str],
    tolerance: float,
) -> GateResult:
    """Both versions on the images of `classes` (the ones both know); the decision and why."""
    examples = [(p, c) for p, c in examples if c in classes]
    if not examples:
        raise VersionError(f"the evaluation images have none of the classes {', '.join(classes)}")
    cand = run_version(client, model, candidate, examples, classes)
    if default is None:
        return GateResult(model, None, cand, None, tolerance, classes, True, "no default to compare with")
    base = run_version(client, model, default, examples, classes)
    agreement = round(sum(a == b for a, b in zip(base.predicted, cand.predicted, strict=True)) / len(examples), 4)
    floor = base.accuracy - tolerance
    passed = cand.accuracy >= floor and cand.failed == 0
    if cand.failed:
        reason = f"{cand.failed} of {cand.images} answers of version {candidate} failed"
    elif passed:
        reason = f"accuracy {_pct(cand.accuracy)} >= {_pct(base.accuracy)} - tolerance {_pct(tolerance)}"
    else:
        reason = (
            f"accuracy {_pct(cand.accuracy)} is below the default's {_pct(base.accuracy)} "
            f"- tolerance {_pct(tolerance)} = {_pct(floor)}"
        )
    return GateResult(model, base, cand, agreement, tolerance, classes, passed, reason)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def table(result: GateResult) -> str:
    """The side-by-side table deploy prints (Markdown, so it pastes into a report as is)."""
    columns = [f for f in (result.default, result.candidate) if f is not None]
    heads = ([f"default v{result.default.version}"] if result.default else []) + [
        f"candidate v{result.candidate.version}"
    ]
    rows = [("images", [str(f.images) for f in columns]), ("accuracy", [_pct(f.accuracy) for f in columns])]
    rows += [(f"recall {c}", [_pct(f.recall[c]) for f in columns]) for c in result.classes]
    rows.append(("most wrong", [", ".join(f"{c} ({n})" for c, n in f.most_wrong) or "none" for f in columns]))
    rows.append(("p50 latency", [f"{f.p50_ms:.1f} ms" for f in columns]))
    rows.append(("failed answers", [str(f.failed) for f in columns]))
    if result.agreement is not None:
        rows.append(("agreement", [_pct(result.agreement), ""]))
    widths = [max(len(r[0]) for r in rows + [("", [])])] + [
        max(len(heads[i]), *(len(r[1][i]) for r in rows)) for i in range(len(heads))
    ]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(["", *heads], widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip([name, *cells], widths, strict=True)) + " |"
        for name, cells in rows
    ]
    verdict = "PASSES" if result.passed else "REFUSED"
    return "\n".join(lines) + f"\n\ngate {verdict}: {result.reason}"
