"""service/client/upload.py: big photos go to the server as smaller upright JPEGs, everything else as it is."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from handler.images import decode_image
from handler.model_card import Preprocessing
from handler.preprocess import to_tensor
from handler.settings import DEFAULTS
from service.client.upload import UPLOAD_MAX_BYTES, UPLOAD_SHORT_SIDE, shrink_for_upload
from service.photos import grace_hopper, phone_photo_jpeg
from tests.conftest import MODEL


@pytest.fixture(scope="module")
def photo_48mp() -> bytes:
    return phone_photo_jpeg(48)


def rotated_with_exif(data: bytes) -> bytes:
    """The same photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    with Image.open(io.BytesIO(data)) as image:
        sideways = image.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        buffer = io.BytesIO()
        sideways.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def test_small_photo_goes_as_it_is():
    data = grace_hopper().read_bytes()
    assert shrink_for_upload(data) == (data, False)


def test_48mp_photo_goes_as_a_1024px_jpeg(photo_48mp):
    sent, shrunk = shrink_for_upload(photo_48mp)
    assert shrunk and len(sent) < len(photo_48mp) / 10
    with Image.open(io.BytesIO(sent)) as image:
        assert image.format == "JPEG" and min(image.size) == UPLOAD_SHORT_SIDE
        assert image.size[0] > image.size[1]  # still landscape, as the photo is


def test_model_sees_nearly_the_same_picture(photo_48mp):
    """What the model gets from the shrunk photo is within JPEG noise of what it gets from the original."""
    spec = Preprocessing()
    sent, _ = shrink_for_upload(photo_48mp)
    full = to_tensor(decode_image(photo_48mp, DEFAULTS.max_pixels, min_side=2 * spec.resize), spec)
    small = to_tensor(decode_image(sent, DEFAULTS.max_pixels, min_side=2 * spec.resize), spec)
    assert full.shape == small.shape
    assert (full - small).abs().mean() < 0.05, (full - small).abs().mean()


def test_exif_orientation_is_applied_before_shrinking(photo_48mp):
    sideways = rotated_with_exif(photo_48mp)
    sent, shrunk = shrink_for_upload(sideways)
    assert shrunk
    with Image.open(io.BytesIO(sent)) as image:
        assert image.size[0] > image.size[1], "shrunk photo must be upright (landscape), not stored sideways"
        assert image.getexif().get(0x0112) in (None, 1)


def test_a_big_body_that_is_not_a_picture_goes_as_it_is():
    data = os.urandom(UPLOAD_MAX_BYTES + 1)
    assert shrink_for_upload(data) == (data, False)


@pytest.mark.server
def test_client_sends_a_48mp_photo_and_gets_an_answer(torchserve, photo_48mp):
    """Through the real server: the shrunk photo is answered like any photo (same shape of answer)."""
    response = torchserve.client().predict(MODEL, photo_48mp, filename="phone.jpg")
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == DEFAULTS.topk
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
