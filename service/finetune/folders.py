"""The folder layout a fine-tune reads, without torch: the UI writes corrections in it and imports this."""

from __future__ import annotations

import unicodedata

SPLIT_FOLDERS = ("train", "val")


def name_key(name: str) -> str:
    """What a person reads as the same label: Unicode-normalized, stripped, case-folded."""
    return unicodedata.normalize("NFKC", name).strip().casefold()
