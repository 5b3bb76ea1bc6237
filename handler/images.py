"""Bytes to an upright RGB picture, or a RequestError that says what is wrong with them."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from handler.errors import RequestError

try:  # iPhone photos (HEIC/HEIF); optional so the plain functions work without it.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    _HEIF = ("HEIF",)
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    _HEIF = ()

# Pillow's JPEG opener also opens MPO, the multi-picture JPEG that many phones write.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", *_HEIF)
FORMAT_NAMES = "JPEG, PNG, GIF, WebP, BMP, TIFF" + (", HEIC" if _HEIF else "")


# A picture whose sides differ more than this is refused: resizing its shorter side to the
# model's input (256 px) would make the longer side explode (20000x1 -> 5,120,000x256 pixels).
MAX_ASPECT_RATIO = 100


def decode_image(data: bytes, max_pixels: int, min_side: int = 0) -> Image.Image:
    """Decode one image to RGB, upright, first frame only.

    Refuses images over `max_pixels` from the header alone, before any pixel is decoded.
    JPEGs are decoded with DCT scaling (`draft`) to no less than `min_side` on the shorter
    side; choose `min_side` well above the resize target so the result matches full decoding.
    Whatever goes wrong inside the decoder becomes a RequestError for this request alone; no
    message carries bytes of the request.
    """
    if not data:
        raise RequestError("the request has no image: the body is empty", 400, "MissingImage")
    try:
        return _decode(data, max_pixels, min_side)
    except RequestError:
        raise
    except MemoryError:
        raise RequestError("image is too large to decode", 413, "ImageTooLarge")
    except Exception as e:  # anything a decoder raises on hostile data fails this request only
        raise RequestError(f"image could not be decoded ({type(e).__name__})", 400, "InvalidImage")


def _too_many_pixels(max_pixels: int) -> RequestError:
    return RequestError(f"image has too many pixels; the limit is {max_pixels} pixels", 413, "ImageTooLarge")


def _decode(data: bytes, max_pixels: int, min_side: int) -> Image.Image:
    # Pillow's own decompression-bomb guard (it also checks GIF frames and other sizes found
    # while loading) reads this module-wide limit: make it the one our messages name.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Over max_pixels Pillow only warns (it refuses over twice that): the header check
            # below refuses these with the image's size in the message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels(max_pixels)
    except UnidentifiedImageError:
        raise RequestError(f"not a supported image; send one of {FORMAT_NAMES}", 415, "UnsupportedImage")
    except Exception as e:  # PIL raises many types on malformed headers
        raise RequestError(f"image header is corrupt ({type(e).__name__})", 400, "InvalidImage")

    width, height = image.size
    if width < 1 or height < 1:
        raise RequestError("image has no pixels", 400, "InvalidImage")
    if width * height > max_pixels:
        raise RequestError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels",
            413,
            "ImageTooLarge",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise RequestError(
            f"image is {width}x{height}: its sides differ by more than {MAX_ASPECT_RATIO}:1, "
            "which cannot be classified as a picture",
            400,
            "InvalidImage",
        )
    if image.format in ("JPEG", "MPO") and min_side > 0:
        scale = min(width, height) / min_side
        if scale >= 2:
            image.draft("RGB", (int(width / scale), int(height / scale)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except MemoryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # e.g. a GIF frame grew
        raise _too_many_pixels(max_pixels)
    except Exception as e:
        raise RequestError(f"image data is truncated or corrupt ({type(e).__name__})", 400, "InvalidImage")
    if image.size != (width, height) and image.format not in ("JPEG", "MPO"):
        raise RequestError("image data does not match its header", 400, "InvalidImage")
    turn = _orientation(image)  # read before reducing: a reduced copy has no TIFF tags
    if image.format not in ("JPEG", "MPO"):  # JPEGs were reduced by draft() while decoding
        image = _reduced(image, min_side)
    return to_rgb(image.transpose(turn) if turn is not None else image)


# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes Image.reduce cannot average in, and the mode each is averaged in instead.
_REDUCE_IN = {"1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}


def _orientation(image: Image.Image) -> Image.Transpose | None:
    """The transpose that EXIF orientation asks for; a corrupt EXIF block is ignored rather than failing the photo."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data"
            return _UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation))
    except Exception:
        return None


def _reduced(image: Image.Image, min_side: int) -> Image.Image:
    """Box-average a large decoded picture down to no less than `min_side` on its shorter side before
    any per-pixel conversion, as draft() does for JPEGs. The conversions in to_rgb copy the picture up
    to four times: a 49 MP RGBA PNG cost 840 MiB of a worker's memory without this (measured)."""
    factor = min(image.size) // min_side if min_side > 0 else 1
    if factor < 2:
        return image
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode in _REDUCE_IN:
        image = image.convert(_REDUCE_IN[image.mode])
    return image.reduce(factor)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white, as viewers show it."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float32)
        if array.max(initial=0) > 255:  # 16-bit samples
            array = array / 257.0
        return Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except Exception as e:
        raise RequestError(
            f"image mode {image.mode} cannot be converted to RGB ({type(e).__name__})", 415, "UnsupportedImage"
        )
