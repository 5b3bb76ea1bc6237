"""Where the page's photos come from: picked files, a whole folder, or the camera.

One source at a time (a choice above the picker), so the page has one picker on it. A folder brings
its subfolders too; its files keep their path ("trip/day 1/IMG_0001.jpg") as their name, and files
that are not images by their ending (notes, .DS_Store, videos) are listed as skipped, not sent.
A camera picture is classified like an uploaded JPEG.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import streamlit as st

FILES, FOLDER, CAMERA = "Files", "A folder", "Camera"
SOURCE_KEY = "source"
# What the handler decodes (handler/images.py: Pillow plus pillow-heif), by file ending.
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
        ".mpo",
    }
)
# The camera's resolution: 720p gives at least 720 px on the short side, well above the model's
# 256 px resize and 224 px crop, and small enough to send quickly from a phone.
CAMERA_RESOLUTION = "720p"


@dataclass
class Picked:
    """The photos to classify as (name, bytes) in the order given, and the files left out."""

    photos: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def is_image_name(name: str) -> bool:
    """By its ending, and not a hidden file (.DS_Store, ._IMG_0001.jpg resource forks)."""
    path = PurePosixPath(name)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def natural_key(path: str) -> list[object]:
    """ "photo 2.jpg" before "photo 10.jpg", as a file manager lists them."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", path)]


def split_folder(files: list[tuple[str, bytes]]) -> Picked:
    """A folder's files by path (the browser lists them in no useful order): the images to send and
    the rest, skipped."""
    picked = Picked()
    for name, data in sorted(files, key=lambda file: natural_key(file[0])):
        if is_image_name(name):
            picked.photos.append((name, data))
        else:
            picked.skipped.append(name)
    return picked


def camera_name(data: bytes) -> str:
    """A name per picture (the camera widget calls every picture image.jpg)."""
    return f"camera-{hashlib.sha256(data).hexdigest()[:8]}.jpg"


def pick_photos() -> Picked:
    """Draw the source choice and its picker; the photos it holds now."""
    source = st.radio(
        "Photos from", [FILES, FOLDER, CAMERA], horizontal=True, key=SOURCE_KEY, label_visibility="collapsed"
    )
    if source == CAMERA:
        shot = st.camera_input(
            "Take a picture", resolution=CAMERA_RESOLUTION, help="The picture is classified as soon as it is taken."
        )
        if shot is None:
            return Picked()
        data = shot.getvalue()
        return Picked([(camera_name(data), data)])
    if source == FOLDER:
        files = st.file_uploader(
            "Pick a folder of photos (its subfolders too)",
            accept_multiple_files="directory",
            help="Images are classified; other files are listed as skipped.",
        )
        picked = split_folder([(f.name, f.getvalue()) for f in files or []])
        if picked.skipped:
            with st.expander(f"{len(picked.skipped)} files skipped: not images"):
                st.text("\n".join(picked.skipped))
        return picked
    files = st.file_uploader(
        "Drag and drop photos here, or click to pick them",
        accept_multiple_files=True,
        help="JPEG, PNG, GIF, WebP, BMP, TIFF or HEIC; sent to the server as they are.",
    )
    return Picked([(f.name, f.getvalue()) for f in files or []])
