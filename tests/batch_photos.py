"""A folder of many different photos for the batch tests: crops of the real sample photos
(service/photos.py), each tinted and sized a little differently, saved as JPEG, PNG and WebP in turn,
spread over subfolders. Deterministic: the same folder every run."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageEnhance

from service.photos import photos

FORMATS = (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"))
SUBFOLDERS = ("", "day 1", "day 2/evening")


def make_photo_folder(folder: Path, count: int, seed: int = 7) -> list[Path]:
    """`count` photos under `folder` (in three subfolder levels), in creation order."""
    rng = random.Random(seed)
    sources = [Image.open(path).convert("RGB") for path in photos().values()]
    made = []
    for i in range(count):
        source = sources[i % len(sources)]
        width, height = source.size
        side = rng.randint(min(width, height) // 2, min(width, height))
        left, top = rng.randint(0, width - side), rng.randint(0, height - side)
        picture = source.crop((left, top, left + side, top + side)).resize((rng.randint(160, 320),) * 2)
        picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.3, 1.7))
        picture = ImageEnhance.Brightness(picture).enhance(rng.uniform(0.7, 1.3))
        fmt, suffix = FORMATS[i % len(FORMATS)]
        path = folder / SUBFOLDERS[i % len(SUBFOLDERS)] / f"photo {i:03d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, fmt, **({"quality": 85} if fmt != "PNG" else {}))
        made.append(path)
    return made
