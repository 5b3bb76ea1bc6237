"""Corrections a person gives in the UI, kept for the next fine-tune.

The folder is in ImageFolder layout, exactly what `make finetune DATA=<folder>` reads: one sub-folder
per label, each photo under the sha256 of its original bytes (so a photo is stored once), plus
`corrections.jsonl`, one JSON line per correction (time, model, version, what the model said, the
label given). Nothing the browser sends becomes a path unchecked: a label is refused unless it is
a plain folder name, and every path is checked to stay inside the folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from handler.errors import RequestError
from handler.images import decode_image
from handler.settings import DEFAULTS
from service.finetune.folders import SPLIT_FOLDERS, name_key
from service.names import FEEDBACK_DIR

MAX_LABEL_CHARS = 100
DEFAULT_MAX_MB = 500
LOG_NAME = "corrections.jsonl"
SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
            "TIFF": ".tif", "HEIF": ".heic"}


class FeedbackError(ValueError):
    """A correction that cannot be stored, in words for the person who gave it."""


def check_label(raw: str) -> str:
    """The label as a folder name, or FeedbackError saying why it cannot be one."""
    label = unicodedata.normalize("NFC", raw or "").strip()
    if not label:
        raise FeedbackError("The label is empty: pick one from the list or type a class name.")
    if len(label) > MAX_LABEL_CHARS:
        raise FeedbackError(f"The label is {len(label)} characters long; at most {MAX_LABEL_CHARS} are allowed.")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in label):
        raise FeedbackError("The label contains control or invisible characters; type plain text.")
    if "/" in label or "\\" in label:
        raise FeedbackError("The label may not contain / or \\ (it names a folder).")
    if label.startswith("."):
        raise FeedbackError("The label may not start with a dot (such folders are hidden and dots-only "
                            "names like '..' would leave the feedback folder).")
    if label.casefold() in SPLIT_FOLDERS:
        raise FeedbackError(f"'{label}' is reserved: a folder of that name would make fine-tuning read "
                            "the feedback folder as a train/val split. Use another name.")
    return label


@dataclass(frozen=True)
class Saved:
    label: str  # the folder it is in (an existing label that differs only in case is reused)
    path: Path
    new: bool  # False: the same photo was already stored (with this label, or moved to it now)

    def message(self) -> str:
        if self.new:
            return f"Saved as **{self.label}** for the next fine-tune."
        return f"This photo was already saved; it is now filed as **{self.label}** (stored once)."


class FeedbackStore:
    """The feedback folder, its size cap, and a lock so the UI's sessions write one at a time."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.lock = threading.Lock()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> FeedbackStore:
        """TS_FEEDBACK_DIR (default var/feedback) and TS_FEEDBACK_MAX_MB (default 500)."""
        env = dict(os.environ if env is None else env)
        root = Path(env.get("TS_FEEDBACK_DIR") or FEEDBACK_DIR)
        megabytes = float(env.get("TS_FEEDBACK_MAX_MB") or DEFAULT_MAX_MB)
        return cls(root, int(megabytes * 2**20))

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) if self.root.is_dir() else 0

    def save(self, image: bytes, label: str, model: dict, predicted: dict | None) -> Saved:
        """Store the original bytes under the label (once per photo) and log the correction."""
        label = check_label(label)
        suffix = image_suffix(image)
        digest = hashlib.sha256(image).hexdigest()
        with self.lock:
            self.root.mkdir(parents=True, exist_ok=True)
            folder = self.folder_for(label)
            target = self.inside(folder / f"{digest}{suffix}")
            existing = [p for p in self.root.glob(f"*/{digest}{suffix}") if p.is_file()]
            if not existing:
                self.check_room(len(image))
            folder.mkdir(exist_ok=True)
            if existing:
                if existing[0] != target:
                    os.replace(self.inside(existing[0]), target)  # one photo, one label: the latest correction
            else:
                write_new(target, image)
            self.log(model, predicted, folder.name, target, digest)
        return Saved(folder.name, target, new=not existing)

    def folder_for(self, label: str) -> Path:
        """The label's folder; an existing one whose name differs only by case or spacing is reused,
        since fine-tuning refuses two such folders."""
        if self.root.is_dir():
            for existing in self.root.iterdir():
                if existing.is_dir() and not existing.is_symlink() and name_key(existing.name) == name_key(label):
                    return self.inside(existing)
        return self.inside(self.root / label)

    def inside(self, path: Path) -> Path:
        """`path` if it resolves to a place inside the feedback folder (no .., no symlink out), else refuse."""
        root = self.root.resolve()
        resolved = path.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise FeedbackError("That label would leave the feedback folder; it is refused.")
        return path

    def check_room(self, size: int) -> None:
        used = self.used_bytes()
        if used + size > self.max_bytes:
            raise FeedbackError(
                f"The feedback folder is full ({used / 2**20:.1f} MiB of {self.max_bytes / 2**20:.0f} MiB): "
                f"fine-tune on it (`make finetune DATA={self.root}`) and empty it, or raise TS_FEEDBACK_MAX_MB."
            )

    def log(self, model: dict, predicted: dict | None, label: str, path: Path, digest: str) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": model.get("name"),
            "version": model.get("version"),
            "predicted": {"label": predicted.get("label"), "probability": predicted.get("probability")}
            if predicted else None,
            "label": label,
            "confirmed": bool(predicted and predicted.get("label") == label),
            "file": path.relative_to(self.root).as_posix(),
            "sha256": digest,
        }
        with open(self.root / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def image_suffix(image: bytes) -> str:
    """The file ending for the photo's format; FeedbackError if the handler could not read it."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            fmt = opened.format or ""
        decode_image(image, DEFAULTS.max_pixels)
    except RequestError as e:
        raise FeedbackError(f"This file cannot be used for training: {e.message}.")
    except Exception:  # noqa: BLE001 - anything Pillow raises on a non-image
        raise FeedbackError("This file is not an image the model can read.")
    return SUFFIXES.get(fmt, ".img")


def write_new(path: Path, data: bytes) -> None:
    """Write a new file, never over an existing one or through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
