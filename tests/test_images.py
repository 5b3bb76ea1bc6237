"""Hostile and unusual uploads, built at run time, and what decoding makes of each (no TorchServe).

`bad_inputs()` and `good_inputs()` are the corpus that tests/test_reliability.py also sends to a
real TorchServe. Each case says what a correct service answers: 200 with predictions, or a 4xx
JSON error of a given type.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from unittest.mock import patch

import numpy as np
import pytest
from PIL import Image, ImageFile

from handler.errors import RequestError
from handler.images import MAX_ASPECT_RATIO, decode_image
from handler.model_card import Preprocessing
from handler.preprocess import decode_for_model, to_tensor
from handler.request import Limits, parse_request
from handler.settings import DEFAULTS

MAX_PIXELS = DEFAULTS.max_pixels


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str
    status: int  # 200: predictions expected
    kind: str = ""  # the error "type" expected for a 4xx
    multipart: dict | None = None  # sent as multipart/form-data fields instead of a raw body


def _photo(size=(320, 240)) -> Image.Image:
    """A small colour picture with structure (gradients), so resizing and cropping matter."""
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :]
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def jpeg(size=(320, 240)) -> bytes:
    return _save(_photo(size), "JPEG", quality=90)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 50_000) -> bytes:
    """A real 1-bit PNG of side x side black pixels: 2.5 gigapixels that compress to ~300 KB."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    chunks.append(compressor.compress(row * (side % 1000)) + compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(chunks))
            + _png_chunk(b"IEND", b""))


def jpeg_with_lying_header() -> bytes:
    """A 320x240 JPEG whose frame header (SOF0) claims 640x480."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 480, 640)
    return bytes(data)


def png_with_lying_header() -> bytes:
    """A 320x240 PNG whose IHDR claims 640x480 (CRC fixed, so only the pixel data disagrees)."""
    data = bytearray(_save(_photo(), "PNG"))
    struct.pack_into(">II", data, 16, 640, 480)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_with_corrupt_exif() -> bytes:
    """A JPEG with an APP1 Exif segment whose TIFF structure is garbage (offsets past the end)."""
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 0xFFFFFF00) + b"\xde\xad\xbe\xef" * 8
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    data = jpeg()
    return data[:2] + segment + data[2:]


def jpeg_rotated_by_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    return _save(_photo((320, 240)), "JPEG", exif=exif.tobytes())


def animated_gif(frames: int = 300) -> bytes:
    images = [_photo((64, 48)).rotate(i * 7).convert("P") for i in range(frames)]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=20, loop=0)


def palette_png_with_transparency() -> bytes:
    image = _photo((128, 96)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return _save(image, "PNG", transparency=0)


def png_16bit() -> bytes:
    gray = (np.linspace(0, 65535, 200 * 150).reshape(150, 200)).astype(np.uint16)
    return _save(Image.frombytes("I;16", (200, 150), gray.tobytes()), "PNG")


def heic() -> bytes:
    from pillow_heif import from_pillow

    buffer = io.BytesIO()
    from_pillow(_photo((320, 240))).save(buffer, quality=80)
    return buffer.getvalue()


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("photo.jpg", jpeg())
    return buffer.getvalue()


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">' \
      b'<circle cx="50" cy="50" r="40" fill="red"/></svg>'
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def bad_inputs() -> list[Case]:
    """Inputs a correct service refuses, each with its own 4xx."""
    good = jpeg()
    return [
        Case("empty body", b"", "image/jpeg", 400, "MissingImage"),
        Case("plain text", b"hello, this is not a picture\n", "text/plain", 400, "InvalidBase64"),
        Case("HTML", HTML, "text/html", 400, "InvalidBase64"),
        Case("PDF", PDF, "application/pdf", 415, "UnsupportedImage"),
        Case("ZIP", zip_file(), "application/zip", 415, "UnsupportedImage"),
        Case("SVG", SVG, "image/svg+xml", 415, "UnsupportedImage"),
        Case("JPEG cut in half", good[: len(good) // 2], "image/jpeg", 400, "InvalidImage"),
        Case("PNG header claims 640x480, holds 320x240", png_with_lying_header(), "image/png", 400,
             "InvalidImage"),
        Case("PNG bomb 50000x50000", png_bomb(), "image/png", 413, "ImageTooLarge"),
        Case("20000x1 image", _save(_photo((20000, 1)), "PNG"), "image/png", 400, "InvalidImage"),
        Case("invalid base64 (text)", b"!!!not*base64###", "text/plain", 400, "InvalidBase64"),
        Case("invalid base64 (JSON)", json.dumps({"data": "@@@@"}).encode(), "application/json", 400,
             "InvalidBase64"),
        Case("multipart without a file", b"", "multipart/form-data", 400, "MissingImage",
             multipart={"topk": "3"}),
    ]


def good_inputs() -> list[Case]:
    """Unusual but valid pictures: each gets predictions."""
    rgb = _photo()
    return [
        Case("JPEG", jpeg(), "image/jpeg", 200),
        Case("1x1 image", _save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "image/png", 200),
        Case("animated GIF, 300 frames", animated_gif(), "image/gif", 200),
        Case("CMYK JPEG", _save(rgb.convert("CMYK"), "JPEG"), "image/jpeg", 200),
        Case("16-bit PNG", png_16bit(), "image/png", 200),
        Case("palette PNG with transparency", palette_png_with_transparency(), "image/png", 200),
        Case("grayscale JPEG", _save(rgb.convert("L"), "JPEG"), "image/jpeg", 200),
        Case("RGBA PNG", _save(rgb.convert("RGBA"), "PNG"), "image/png", 200),
        # libjpeg recovers from scan data that ends early by filling the rest with gray, as browsers
        # display it; the answer is the one for that picture (the same as a local decode gives).
        Case("JPEG header claims 640x480, holds 320x240", jpeg_with_lying_header(), "image/jpeg", 200),
        Case("JPEG with corrupt EXIF", jpeg_with_corrupt_exif(), "image/jpeg", 200),
        Case("JPEG rotated by EXIF", jpeg_rotated_by_exif(), "image/jpeg", 200),
        Case("WebP", _save(rgb, "WEBP"), "image/webp", 200),
        Case("HEIC (iPhone)", heic(), "image/heic", 200),
        Case("base64 JSON", json.dumps({"data": base64.b64encode(jpeg()).decode()}).encode(), "application/json",
             200),
    ]


def as_torchserve_request(case: Case) -> dict:
    """What TorchServe's Python worker hands the handler for this upload (text/* decoded, JSON parsed)."""
    if case.multipart is not None:
        return dict(case.multipart)
    if case.content_type == "application/json":
        return {"body": json.loads(case.body)}
    if case.content_type.startswith("text"):
        return {"body": case.body.decode()}
    return {"body": case.body}


def decode(case: Case) -> Image.Image:
    """What the handler does with this upload: parse the request, then decode its image for the model."""
    parsed = parse_request(as_torchserve_request(case), {}, Limits(DEFAULTS.topk, 1000, DEFAULTS.max_image_bytes))
    if parsed.error is not None:
        raise parsed.error
    return decode_for_model(parsed.images[0], Preprocessing(), MAX_PIXELS)


@pytest.mark.parametrize("case", bad_inputs(), ids=lambda c: c.name)
def test_bad_input_is_a_request_error_that_does_not_echo_the_bytes(case):
    started = time.process_time()  # this process's CPU, not the wall clock: other load does not count
    with pytest.raises(RequestError) as raised:
        decode(case)
    assert time.process_time() - started < 2, "refused, but only after seconds of work"
    error = raised.value
    assert (error.status, error.kind) == (case.status, case.kind), error.message
    assert 400 <= error.status < 500
    # The message names the problem in our words; it never carries the request's bytes.
    body_text = case.body.decode("latin-1")
    for start in range(0, max(1, len(body_text) - 8), 8):
        fragment = body_text[start : start + 8]
        if len(fragment) == 8 and fragment.strip():
            assert fragment not in error.message
    assert len(error.message) < 300


@pytest.mark.parametrize("case", good_inputs(), ids=lambda c: c.name)
def test_unusual_but_valid_pictures_decode_to_rgb(case):
    image = decode(case)
    assert image.mode == "RGB" and min(image.size) >= 1
    tensor = to_tensor(image, Preprocessing())
    assert tuple(tensor.shape) == (3, 224, 224) and bool(tensor.isfinite().all())


def test_pixel_limit_is_checked_from_the_header_with_the_limit_in_the_message():
    with pytest.raises(RequestError) as raised:
        decode_image(_save(_photo((300, 200)), "PNG"), max_pixels=50_000)
    assert raised.value.status == 413 and "50000" in raised.value.message and "300x200" in raised.value.message


@pytest.mark.parametrize("side", [260, 400])  # over max_pixels (Pillow warns) / over twice it (Pillow refuses)
def test_pillows_own_pixel_guard_uses_max_pixels(side):
    """Pillow's decompression-bomb guard is set to max_pixels, so it and our message name one limit:
    an image between max_pixels and Pillow's own default limit (89 MP) is refused, naming max_pixels."""
    max_pixels = 50_000
    with pytest.raises(RequestError) as raised:
        decode_image(_save(_photo((side, side)), "PNG"), max_pixels=max_pixels)
    assert Image.MAX_IMAGE_PIXELS == max_pixels, "Pillow's guard is on, at max_pixels"
    assert raised.value.status == 413 and raised.value.kind == "ImageTooLarge"
    assert f"the limit is {max_pixels} pixels" in raised.value.message


def test_pillows_guard_does_not_refuse_what_max_pixels_allows():
    """A max_pixels above Pillow's default: an image between the two is decoded, not refused."""
    Image.MAX_IMAGE_PIXELS = 10_000  # as another caller may have left it
    assert decode_image(_save(_photo((300, 200)), "PNG"), max_pixels=60_000).size == (300, 200)
    decode_image(jpeg(), MAX_PIXELS)  # leave the module's limit as the rest of the suite expects


def test_bomb_is_refused_before_decoding():
    data = png_bomb()
    assert len(data) < 400_000
    with patch.object(ImageFile.ImageFile, "load", side_effect=AssertionError("pixels were decoded")), \
            pytest.raises(RequestError) as raised:
        decode_image(data, MAX_PIXELS)
    assert raised.value.status == 413 and str(MAX_PIXELS) in raised.value.message


def test_extreme_aspect_ratio_is_refused_but_long_panoramas_are_not():
    assert decode_image(_save(_photo((MAX_ASPECT_RATIO * 3, 3)), "PNG"), MAX_PIXELS).size == (
        MAX_ASPECT_RATIO * 3, 3)
    with pytest.raises(RequestError) as raised:
        decode_image(_save(_photo((1, 2000)), "PNG"), MAX_PIXELS)
    assert raised.value.status == 400 and "1x2000" in raised.value.message


def test_exif_orientation_is_applied():
    assert decode_image(jpeg_rotated_by_exif(), MAX_PIXELS).size == (240, 320)


def test_transparency_is_composited_over_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(_save(image, "PNG"), MAX_PIXELS).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_samples_are_scaled_not_clipped():
    image = decode_image(png_16bit(), MAX_PIXELS)
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((199, 149)) == (255, 255, 255)


def test_any_exception_while_decoding_becomes_a_request_error(monkeypatch):
    """Whatever Pillow raises inside (here a MemoryError and a bug-like ValueError), only this request fails."""
    for exception in (MemoryError(), ValueError("boom"), SyntaxError("broken")):
        def explode(self, exception=exception):
            raise exception

        monkeypatch.setattr(ImageFile.ImageFile, "load", explode)
        with pytest.raises(RequestError) as raised:
            decode_image(jpeg(), MAX_PIXELS)
        assert 400 <= raised.value.status < 500
        monkeypatch.undo()


def _photo_like(width: int, height: int, mode: str) -> Image.Image:
    """A smooth picture of the given size and mode (upscaled noise, so it compresses like a photo)."""
    rng = np.random.default_rng(width + height)
    base = Image.fromarray(rng.integers(0, 256, (height // 32, width // 32, 4), dtype=np.uint8), "RGBA")
    big = base.resize((width, height), Image.Resampling.BILINEAR)
    if mode == "I;16":
        return Image.fromarray(np.asarray(big.convert("L"), dtype=np.uint16) * 257)
    if mode == "P":
        return big.convert("RGB").quantize(64)
    return big.convert(mode)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, fmt", [("RGBA", "PNG"), ("RGB", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("RGB", "TIFF")])
def test_large_pictures_are_reduced_before_conversion_and_stay_close(mode, fmt):
    """A large non-JPEG is box-averaged to no less than twice the resize target before to_rgb's
    copies (memory: docs/RELIABILITY.md); the model's input stays close to full decoding."""
    spec = Preprocessing()
    data = _encoded(_photo_like(2400, 1800, mode), fmt)
    reduced = decode_for_model(data, spec, DEFAULTS.max_pixels)
    assert min(reduced.size) >= 2 * spec.resize and min(reduced.size) < 4 * spec.resize
    full = decode_image(data, DEFAULTS.max_pixels, min_side=0)
    assert full.size == (2400, 1800)
    difference = (to_tensor(reduced, spec) - to_tensor(full, spec)).abs()
    assert difference.mean() < 0.02 and difference.max() < 0.5, (difference.mean(), difference.max())


def test_orientation_is_applied_to_a_reduced_picture():
    """EXIF orientation is read before reducing (a reduced copy has no TIFF tags) and applied after."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    for fmt in ("TIFF", "PNG"):
        data = _encoded(_photo_like(1800, 2400, "RGB"), fmt, exif=exif.tobytes())
        image = decode_for_model(data, Preprocessing(), DEFAULTS.max_pixels)
        assert image.width > image.height, fmt
