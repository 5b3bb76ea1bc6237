"""A generated ImageFolder to try fine-tuning on: coloured shapes on noisy backgrounds.

Each class is one shape in its own hue (jittered), at a random place, size and rotation, over
noise on a random background tone; files alternate between JPEG and PNG. A small network learns it
in seconds, which is what the tests and docs/FINETUNE.md's worked example need.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Shape -> base hue (degrees). The default class folder names sort differently from this order.
SHAPES = {"circle": 0, "square": 220, "triangle": 120, "cross": 55, "ring": 290}
DEMO_CLASSES = {"circle": "circle", "Square": "square", "triangle": "triangle", "10-cross": "cross", "9-ring": "ring"}


def _colour(hue: float, rng: random.Random) -> tuple[int, int, int]:
    h = (hue + rng.uniform(-15, 15)) % 360 / 60
    v, s = rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.0)
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return int(255 * (r + m)), int(255 * (g + m)), int(255 * (b + m))


def _polygon(cx: float, cy: float, radius: float, angle: float, corners: int) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / corners),
            cy + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def draw_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One picture of `shape` (a key of SHAPES), size x size pixels."""
    tone = rng.randint(40, 200)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(tone, 25, (size, size, 3))
    image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    colour = _colour(SHAPES[shape], rng)
    radius = size * rng.uniform(0.2, 0.33)
    cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(radius / 3)))
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, angle, 4), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, angle, 3), fill=colour)
    else:  # cross: two bars
        width = max(2, int(radius / 2.5))
        for a in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=width)
    return image


def make_demo_data(
    folder: Path, classes: dict[str, str] | None = None, per_class: int = 40, size: int = 64, seed: int = 0
) -> Path:
    """Write `per_class` pictures for each class folder name -> shape (default DEMO_CLASSES)."""
    folder = Path(folder)
    rng = random.Random(seed)
    for name, shape in (classes or DEMO_CLASSES).items():
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = draw_shape(shape, size, rng)
            if i % 2:
                image.save(folder / name / f"{shape}-{i:04d}.png")
            else:
                image.save(folder / name / f"{shape}-{i:04d}.jpg", quality=90)
    return folder
