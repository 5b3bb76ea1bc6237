"""Photos for int8 calibration and for checking an exported runtime, preprocessed exactly as the
handler does it.

The recommended source is a folder of the user's own photos (`--calibration DIR`): pictures
like the ones the model will serve. Without it the builder falls back to the sample photos that
ship inside matplotlib and scikit-image (the latter only requirements-dev.txt installs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from handler.errors import RequestError
from handler.images import FORMATS, decode_image
from handler.model_card import Preprocessing
from handler.preprocess import to_tensor
from handler.settings import DEFAULTS
from service.archive.errors import BuildError


@dataclass(frozen=True)
class CalibrationPhotos:
    paths: list[Path]
    what: str  # how provenance.json names them, e.g. "sample photos"


def photo_folder(folder: Path) -> CalibrationPhotos:
    """Every picture in `folder` (not its subfolders) in a format the handler decodes, by name."""
    if not folder.is_dir():
        raise BuildError(f"--calibration {folder}: not a folder of photos")
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in FORMATS}
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        raise BuildError(f"--calibration {folder}: no photos in it ({', '.join(sorted(extensions))})")
    return CalibrationPhotos(paths, f"photos from {folder.name}")


def sample_photos(purpose: str = "int8 calibration") -> CalibrationPhotos:
    """The sample photos, if the dev-only packages that carry them are installed."""
    try:
        from service.photos import photos

        return CalibrationPhotos(list(photos().values()), "sample photos")
    except ImportError as e:
        raise BuildError(
            f"{purpose} needs photos, and the sample photos are not installed ({e}).\n"
            "Pass a folder of your own photos, ideally like the ones the model will serve:\n"
            "  --calibration /path/to/photos   (JPEG, PNG, ...; a few dozen are enough)\n"
            "or install the development packages that carry the sample photos: pip install -r requirements-dev.txt"
        ) from None


def calibration_photos(folder: Path | None, purpose: str = "int8 calibration") -> CalibrationPhotos:
    return photo_folder(folder) if folder else sample_photos(purpose)


def _decode(path: Path) -> Image.Image:
    try:
        return decode_image(path.read_bytes(), DEFAULTS.max_pixels)
    except RequestError as e:
        raise BuildError(f"cannot calibrate on {path}: {e.message}") from None


def calibration_batches(
    preprocessing: Preprocessing, crops_per_photo: int = 8, seed: int = 0, photos: Sequence[Path] | None = None
) -> list[torch.Tensor]:
    """One batch per photo (default: the sample photos): the photo and augmented crops of it
    (random resized crops, flips), preprocessed exactly as the handler does."""
    paths = photos if photos is not None else sample_photos().paths
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for path in paths:
        image = _decode(path)
        crops = random_crops(image, crops_per_photo, generator)
        batches.append(torch.stack([to_tensor(each, preprocessing) for each in [image, *crops]]))
    return batches


def random_crops(image: Image.Image, count: int, generator: torch.Generator) -> list[Image.Image]:
    """`count` random crops of 35 to 100 % of each side, half of them mirrored: more real images
    from one photo, the same ones for the same generator state."""
    crops = []
    w, h = image.size
    for _ in range(count):
        scale = 0.35 + 0.65 * torch.rand(1, generator=generator).item()
        cw, ch = max(32, int(w * scale)), max(32, int(h * scale))
        x = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        y = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        crop = image.crop((x, y, x + cw, y + ch))
        crops.append(ImageOps.mirror(crop) if torch.rand(1, generator=generator).item() < 0.5 else crop)
    return crops
