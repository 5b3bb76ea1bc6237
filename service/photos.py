"""Images to send: a generated warm-up JPEG (Pillow only, for `make run` and the UI), and real photos
that ship inside dev-only PyPI packages (matplotlib, scikit-image), for tests and benchmarks.

matplotlib and scikit-image are imported inside the functions that need them, so the runtime
(serve, UI) can import this module with requirements.txt alone."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def warm_up_jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    """A small generated JPEG: one cheap real inference (warm-up, or the UI asking for the model card)."""
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize(size).save(buffer, "JPEG")
    return buffer.getvalue()


def _skimage_data() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def grace_hopper() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def photos() -> dict[str, Path]:
    """Name -> path of colour photos of real scenes."""
    data = _skimage_data()
    found = {"grace_hopper": grace_hopper()}
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png"):
        found[name.split(".")[0]] = data / name
    return found


def phone_photo_jpeg(megapixels: float = 12.0, quality: int = 90) -> bytes:
    """A 4:3 JPEG of about `megapixels`, upscaled from a real photo, like a phone camera's output."""
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    with Image.open(_skimage_data() / "coffee.png") as source:
        image = source.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
