"""Examples to model inputs through the handler's own functions, so training sees what serving sees.

Validation (and the frozen features) use `handler.preprocess.model_input`: the exact bytes-to-tensor
path of a served request. Training augmentation crops and flips the decoded picture, then hands it
to the same `to_tensor` (resize, center crop, normalize) the handler uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image, ImageOps

from handler.model_card import Preprocessing
from handler.preprocess import decode_for_model, model_input, to_tensor
from handler.settings import DEFAULTS
from service.finetune.dataset import Example

Transform = Callable[[Example], torch.Tensor]


def serving_input(spec: Preprocessing) -> Transform:
    """What the server computes from this file's bytes."""
    return lambda example: model_input(example.path.read_bytes(), spec, DEFAULTS.max_pixels)


def random_crop(image: Image.Image, generator: torch.Generator, min_area: float = 0.5) -> Image.Image:
    """A random part of the picture: `min_area` to all of its area, aspect ratio 3:4 to 4:3."""
    w, h = image.size
    area = w * h * (min_area + (1 - min_area) * torch.rand(1, generator=generator).item())
    ratio = math.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(1, generator=generator).item())
    cw = max(1, min(w, round(math.sqrt(area * ratio))))
    ch = max(1, min(h, round(math.sqrt(area / ratio))))
    x = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    y = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    return image.crop((x, y, x + cw, y + ch))


def augmented_input(spec: Preprocessing, generator: torch.Generator) -> Transform:
    """Decode as the server does, random crop and flip, then the server's own to_tensor."""

    def transform(example: Example) -> torch.Tensor:
        image = random_crop(decode_for_model(example.path.read_bytes(), spec, DEFAULTS.max_pixels), generator)
        if torch.rand(1, generator=generator).item() < 0.5:
            image = ImageOps.mirror(image)
        return to_tensor(image, spec)

    return transform


def batches(
    examples: Sequence[Example], transform: Transform, batch_size: int, order: Sequence[int] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) in batches, in `order` (default: as given)."""
    indices = list(order) if order is not None else list(range(len(examples)))
    for start in range(0, len(indices), batch_size):
        chunk = [examples[i] for i in indices[start : start + batch_size]]
        yield torch.stack([transform(e) for e in chunk]), torch.tensor([e.label for e in chunk])
