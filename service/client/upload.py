"""Large photos without large bodies: what the UI and the Python client send for a big photo.

A 48 MP phone photo does not need 48 MP to be classified at 224 px, and a 20 MB body costs the
server memory at every hop (docs/RELIABILITY.md, memory budget). Photos over UPLOAD_MAX_PIXELS
or UPLOAD_MAX_BYTES are decoded upright (EXIF orientation applied, as the server would) and sent
as a JPEG whose shorter side is UPLOAD_SHORT_SIDE: four times the model's 256 px resize, so the
server's own decoding (handler/images.py) sees the same picture it would have made of the
original. Everything else, and anything that does not decode, is sent as it is: the server
gives the worded answer.
"""

from __future__ import annotations

import io

from PIL import Image

from handler.errors import RequestError
from handler.images import decode_image
from handler.settings import DEFAULTS

UPLOAD_MAX_PIXELS = 16_000_000
UPLOAD_MAX_BYTES = 8 * 2**20
UPLOAD_SHORT_SIDE = 1024
JPEG_QUALITY = 90


def needs_shrinking(data: bytes) -> bool:
    """True for a body over the byte limit, or a picture whose header says it has too many pixels."""
    if len(data) > UPLOAD_MAX_BYTES:
        return True
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # not a picture Pillow knows: send it as it is
        return False
    return width * height > UPLOAD_MAX_PIXELS


def shrink_for_upload(data: bytes) -> tuple[bytes, bool]:
    """(bytes to send, whether they were re-encoded). Only smaller pictures come out."""
    if not needs_shrinking(data):
        return data, False
    try:
        image = decode_image(data, DEFAULTS.max_pixels, min_side=UPLOAD_SHORT_SIDE)
    except RequestError:  # the server refuses it with the reason; do not hide that here
        return data, False
    scale = UPLOAD_SHORT_SIDE / min(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    smaller = buffer.getvalue()
    return (smaller, True) if len(smaller) < len(data) else (data, False)
