"""The feedback folder: ImageFolder layout fine-tuning reads as it is; hostile labels refused; stored once; capped."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from handler.model_card import Preprocessing
from service.finetune.dataset import load_dataset
from service.photos import photos
from ui.feedback_store import LOG_NAME, FeedbackError, FeedbackStore, check_label

MODEL = {"name": "resnet18", "version": "1.0"}


def jpeg(colour: tuple[int, int, int], side: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("label", [
    "../escape", "a/b", "a\\b", "..", ".", "...", ".hidden", "tab\there", "nul\x00byte", "zero\u200bwidth",
    "bidi\u202eevil", "line\nbreak", "x" * 101, "", "   ", "train", "VAL",
])
def test_hostile_labels_refused_with_a_message(tmp_path, label):
    store = FeedbackStore(tmp_path / "feedback", 10 * 2**20)
    with pytest.raises(FeedbackError) as caught:
        store.save(jpeg((200, 10, 10)), label, MODEL, None)
    assert str(caught.value)
    assert not (tmp_path / "feedback").exists() or not any((tmp_path / "feedback").rglob("*.jpg"))
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["feedback"])  # nothing written beside it


def test_symlinked_label_folder_cannot_lead_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "feedback"
    root.mkdir()
    (root / "cat").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FeedbackError, match="leave the feedback folder"):
        FeedbackStore(root, 10 * 2**20).save(jpeg((1, 2, 3)), "cat", MODEL, None)
    assert list(outside.iterdir()) == []


def test_corrections_in_imagefolder_layout_that_finetuning_reads(tmp_path):
    root = tmp_path / "feedback"
    store = FeedbackStore(root, 10 * 2**20)
    predicted = {"label": "tabby", "index": 281, "probability": 0.61}
    originals = {}
    for i in range(3):
        originals[f"cat{i}"] = jpeg((200, 40 * i, 10))
        saved = store.save(originals[f"cat{i}"], "tabby", MODEL, predicted)  # confirmed
        assert saved.new and saved.label == "tabby"
        originals[f"cup{i}"] = jpeg((10, 40 * i, 200))
        store.save(originals[f"cup{i}"], "my mug", MODEL, predicted)  # a new class, typed
    for data in originals.values():
        digest = hashlib.sha256(data).hexdigest()
        [stored] = list(root.glob(f"*/{digest}.jpg"))
        assert stored.read_bytes() == data  # the original bytes, named by their sha256
    lines = [json.loads(line) for line in (root / LOG_NAME).read_text().splitlines()]
    assert len(lines) == 6
    assert lines[0]["model"] == "resnet18" and lines[0]["version"] == "1.0" and lines[0]["confirmed"]
    assert lines[1]["predicted"] == {"label": "tabby", "probability": 0.61} and lines[1]["label"] == "my mug"
    assert not lines[1]["confirmed"] and lines[1]["time"].endswith("+00:00")
    dataset = load_dataset(root, Preprocessing(), val_split=0.34)
    assert dataset.classes == ["my mug", "tabby"] and len(dataset.train) + len(dataset.val) == 6
    assert not dataset.unreadable


def test_duplicate_photo_stored_once_and_case_variants_share_a_folder(tmp_path):
    root = tmp_path / "feedback"
    store = FeedbackStore(root, 10 * 2**20)
    photo = photos()["chelsea"].read_bytes()
    assert store.save(photo, "Tabby", MODEL, None).new
    again = store.save(photo, "tabby ", MODEL, None)
    assert not again.new and again.label == "Tabby"
    moved = store.save(photo, "tiger cat", MODEL, None)  # corrected again: one photo, one label
    assert not moved.new
    assert [p.relative_to(root).parent.as_posix() for p in root.rglob("*.png")] == ["tiger cat"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["Tabby", "tiger cat"]


def test_size_cap_refuses_with_a_clear_message(tmp_path):
    store = FeedbackStore(tmp_path / "feedback", 4000)
    store.save(jpeg((1, 1, 1), side=32), "a", MODEL, None)
    with pytest.raises(FeedbackError, match="feedback folder is full.*TS_FEEDBACK_MAX_MB"):
        store.save(photos()["coffee"].read_bytes(), "a", MODEL, None)


def test_not_an_image_refused(tmp_path):
    with pytest.raises(FeedbackError, match="not an image"):
        FeedbackStore(tmp_path, 2**20).save(b"hello", "cat", MODEL, None)


def test_plain_labels_kept_as_typed():
    assert check_label("  jack-o'-lantern ") == "jack-o'-lantern"
    assert check_label("crème brûlée") == "crème brûlée"
    assert check_label("x" * 100) == "x" * 100
