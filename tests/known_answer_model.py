"""A small classifier whose right explanation is known: trained here, in seconds, on synthetic pictures.

Each picture is a plain canvas with one real photo's subject pasted at a random place (the cat of
scikit-image's chelsea.png, or the cup of coffee.png), or nothing ("empty"). The model can only
say "cat" by looking at the cat, so an explanation of "cat" must sit where the cat was pasted.
Random weights cannot show that; a pretrained ImageNet model cannot be downloaded here.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from handler.model_card import Preprocessing
from handler.preprocess import to_tensor
from service.photos import photos

SIDE = 64  # the model's input: resize 64, crop 64, so the crop is the whole square canvas
SPEC = Preprocessing(resize=SIDE, crop=SIDE)
LABELS = ["cat", "coffee", "empty"]
# The subject of each photo, as a box (left, top, right, bottom) in the photo's pixels.
SUBJECTS = {"cat": ("chelsea", (130, 20, 330, 220)), "coffee": ("coffee", (120, 20, 480, 330))}


def subject(name: str) -> Image.Image:
    photo, box = SUBJECTS[name]
    return Image.open(photos()[photo]).convert("RGB").crop(box)


def canvas(colour: tuple[int, int, int], side: int = SIDE) -> Image.Image:
    return Image.new("RGB", (side, side), colour)


def paste(picture: Image.Image, thing: Image.Image, size: int, left: int, top: int) -> Image.Image:
    out = picture.copy()
    out.paste(thing.resize((size, size), Image.Resampling.BILINEAR), (left, top))
    return out


def example(label: str, rng: random.Random) -> Image.Image:
    colour = tuple(rng.randrange(40, 230) for _ in range(3))
    picture = canvas(colour)  # type: ignore[arg-type]
    if label == "empty":
        return picture
    size = rng.randrange(20, 30)
    thing = subject(label)
    if rng.random() < 0.5:
        thing = thing.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return paste(picture, thing, size, rng.randrange(0, SIDE - size), rng.randrange(0, SIDE - size))


class TinyNet(torch.nn.Module):
    """Three strided convolutions and a global max pool: it finds a subject wherever it is."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.amax(self.features(x), dim=(2, 3)))


def train(per_class: int = 160, epochs: int = 12, seed: int = 0) -> torch.jit.ScriptModule:
    """Deterministic (seeded data, weights and order; one thread): the same model on every run."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    items = [(to_tensor(example(label, rng), SPEC), i) for i, label in enumerate(LABELS) for _ in range(per_class)]
    inputs = torch.stack([x for x, _ in items])
    targets = torch.tensor([y for _, y in items])
    model = TinyNet(len(LABELS))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for batch in torch.randperm(len(items), generator=generator).split(32):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return torch.jit.script(model.eval())


def subject_on_one_side(side: str, colour: tuple[int, int, int] = (200, 200, 190), label: str = "cat") -> Image.Image:
    """A test picture: a canvas colour not used in training exactly, the subject in the middle of one half."""
    size = 26
    left = (SIDE // 2 - size) // 2 + (SIDE // 2 if side == "right" else 0)
    return paste(canvas(colour), subject(label), size, left, (SIDE - size) // 2)


def save(model: torch.jit.ScriptModule, folder: Path) -> tuple[Path, Path]:
    """model.pt and labels.json, as a bring-your-own archive takes them (--torchscript, --labels)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    model_file, labels_file = folder / "model.pt", folder / "labels.json"
    model.save(str(model_file))
    labels_file.write_text(json.dumps(LABELS))
    return model_file, labels_file


def half_masses(grid: list[list[float]] | np.ndarray) -> tuple[float, float]:
    """(left half's share, right half's share) of the grid's total."""
    cells = np.asarray(grid, dtype=np.float64)
    half = cells.shape[1] // 2
    total = cells.sum()
    return float(cells[:, :half].sum() / total), float(cells[:, half:].sum() / total)
