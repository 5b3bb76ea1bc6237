"""A folder of labelled photos (torchvision's ImageFolder layout) to checked train and validation lists.

Class indices are the class folders' names in sorted order, as ImageFolder assigns them, and the
archive's labels are written from this same list: index and name cannot drift apart. Every file is
decoded once here with the handler's own decoder, so a file the server would refuse is listed and
skipped instead of failing training half-way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from handler.errors import RequestError
from handler.model_card import Preprocessing
from handler.preprocess import decode_for_model
from handler.settings import DEFAULTS
from service.finetune.errors import FinetuneError
from service.finetune.folders import SPLIT_FOLDERS, name_key

LAYOUT_HINT = "one sub-folder per class, e.g. DIR/cat/1.jpg, DIR/dog/2.png (or DIR/train/cat/... and DIR/val/cat/...)"


@dataclass(frozen=True)
class Example:
    path: Path
    label: int  # index into Dataset.classes


@dataclass(frozen=True)
class Unreadable:
    path: str  # relative to the dataset folder
    reason: str


@dataclass(frozen=True)
class Dataset:
    root: Path
    classes: list[str]  # in class-index order: the archive's labels.json is exactly this list
    train: list[Example]
    val: list[Example]
    unreadable: list[Unreadable]
    fingerprint: str  # sha256 over every file's relative path and content
    split: str  # how train and val were chosen, for the report and provenance

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each part, by class name."""
        counts = {name: {"train": 0, "val": 0} for name in self.classes}
        for part, examples in (("train", self.train), ("val", self.val)):
            for example in examples:
                counts[self.classes[example.label]][part] += 1
        return counts


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def class_folders(folder: Path) -> dict[str, Path]:
    """The class sub-folders by name, in sorted (class-index) order."""
    if not folder.is_dir():
        raise FinetuneError(f"{folder} is not a folder; expected {LAYOUT_HINT}")
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def check_class_names(names: Iterable[str], folder: Path) -> list[str]:
    names = list(names)
    if len(names) < 2:
        found = ", ".join(repr(n) for n in names) or "none"
        raise FinetuneError(
            f"{folder}: found {len(names)} class folder(s) ({found}); fine-tuning needs at least 2 classes, "
            + LAYOUT_HINT
        )
    seen: dict[str, str] = {}
    for name in names:
        key = name_key(name)
        if not key:
            raise FinetuneError(f"{folder}: class folder {name!r} has no name once whitespace is removed; rename it")
        if key in seen:
            raise FinetuneError(
                f"{folder}: class folders {seen[key]!r} and {name!r} differ only by case, surrounding whitespace "
                "or Unicode normalization, so their labels would be ambiguous; rename or merge one of them"
            )
        seen[key] = name
    return names


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not is_hidden(p, folder))


def readable(path: Path, spec: Preprocessing) -> str | None:
    """None if the handler decodes the file, else why not."""
    try:
        decode_for_model(path.read_bytes(), spec, DEFAULTS.max_pixels)
    except RequestError as e:
        return e.message
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"
    return None


class _Scan:
    """Decodes and fingerprints files, collecting the unreadable ones."""

    def __init__(self, root: Path, spec: Preprocessing) -> None:
        self.root, self.spec = root, spec
        self.digest = hashlib.sha256()
        self.unreadable: list[Unreadable] = []

    def examples(self, folder: Path, label: int) -> list[Example]:
        found = []
        for path in image_files(folder):
            relative = path.relative_to(self.root).as_posix()
            self.digest.update(f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
            reason = readable(path, self.spec)
            if reason:
                self.unreadable.append(Unreadable(relative, reason))
            else:
                found.append(Example(path, label))
        return found


def too_few(name: str, n: int, need: str) -> FinetuneError:
    return FinetuneError(f"class {name!r} has {n} readable image(s); {need}. Add images to it or remove its folder")


def split_class(examples: list[Example], name: str, val_split: float, rng: random.Random) -> tuple[list, list]:
    """A seeded shuffle, then round(n * val_split) (at least 1) images to validation."""
    n = len(examples)
    n_val = max(1, round(n * val_split))
    if n - n_val < 1:
        raise too_few(name, n, f"--val-split {val_split} needs at least one image for training and one for validation")
    shuffled = examples[:]
    rng.shuffle(shuffled)
    return shuffled[n_val:], shuffled[:n_val]


def load_dataset(root: Path, spec: Preprocessing, val_split: float = 0.2, seed: int = 0) -> Dataset:
    """Check and split the folder; FinetuneError names the first problem found."""
    root = Path(root)
    if not 0 < val_split < 1:
        raise FinetuneError(f"--val-split {val_split} must be between 0 and 1")
    folders = class_folders(root)
    scan = _Scan(root, spec)
    if all(name in folders for name in SPLIT_FOLDERS):
        train_folders, val_folders = class_folders(folders["train"]), class_folders(folders["val"])
        if set(train_folders) != set(val_folders):
            only = sorted(set(train_folders) ^ set(val_folders))
            raise FinetuneError(f"{root}: train/ and val/ must hold the same class folders; not in both: {only}")
        classes = check_class_names(train_folders, root / "train")
        train, val = [], []
        for label, name in enumerate(classes):
            for part, folder, out in (("train", train_folders, train), ("val", val_folders, val)):
                found = scan.examples(folder[name], label)
                if not found:
                    raise too_few(name, 0, f"{part}/{name} needs at least one")
                out.extend(found)
        split = "the folder's own train/ and val/"
    else:
        classes = check_class_names(folders, root)
        rng = random.Random(seed)
        train, val = [], []
        for label, name in enumerate(classes):
            part_train, part_val = split_class(scan.examples(folders[name], label), name, val_split, rng)
            train.extend(part_train)
            val.extend(part_val)
        split = f"stratified {val_split:g} of each class for validation (seed {seed})"
    return Dataset(root, classes, train, val, scan.unreadable, scan.digest.hexdigest(), split)
