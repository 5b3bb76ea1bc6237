"""Fine-tuning's dataset checks, class order, preprocessing and interruption, without a server.

Each bad folder is refused by scripts/finetune.py with a message that names the problem, a
non-zero exit and no archive written. Training here is tiny (random weights, 32 px).
"""

from __future__ import annotations

import json
import sys
import unicodedata
import zipfile
from pathlib import Path

import pytest
import torch

from handler import preprocess
from handler.model_card import LABELS_FILE, PROVENANCE_FILE
from handler.settings import DEFAULTS
from scripts import finetune as cli
from service.archive.sources import official_weights, preprocessing_of
from service.finetune import inputs
from service.finetune.dataset import load_dataset
from service.finetune.demo import make_demo_data
from service.finetune.model import image_size_preprocessing
from service.finetune.progress import Metrics, Progress
from service.finetune.train import TrainConfig, fit

SPEC = image_size_preprocessing(preprocessing_of(official_weights("resnet18")), 32)


def run_cli(data: Path, store: Path, *extra: str) -> int:
    argv = [str(data), "--model-name", "mine", "--random-weights", "--image-size", "32", "--epochs", "2"]
    return cli.main([*argv, "--export-path", str(store), *extra])


def refused(capsys, data: Path, store: Path, *words: str) -> str:
    """Run the CLI on `data`; it must exit non-zero, name the problem and write no archive."""
    code = run_cli(data, store)
    err = capsys.readouterr().err
    assert code != 0, err
    for word in words:
        assert word in err, err
    assert not store.exists() or not any(store.iterdir())
    return err


def test_fewer_than_two_classes_is_refused(tmp_path, capsys):
    make_demo_data(tmp_path / "data", {"circle": "circle"}, per_class=4, size=32)
    refused(capsys, tmp_path / "data", tmp_path / "store", "found 1 class folder", "at least 2 classes", "'circle'")


def test_a_class_too_small_to_split_is_refused(tmp_path, capsys):
    make_demo_data(tmp_path / "data", {"circle": "circle", "square": "square"}, per_class=4, size=32)
    for extra in list((tmp_path / "data" / "square").iterdir())[1:]:
        extra.unlink()
    refused(capsys, tmp_path / "data", tmp_path / "store", "class 'square' has 1 readable image", "--val-split")


@pytest.mark.parametrize(
    "names",
    [
        ("Cat", "cat"),
        ("cat", "cat "),
        (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")),
    ],
    ids=["case", "whitespace", "unicode-normalization"],
)
def test_ambiguous_class_names_are_refused(tmp_path, capsys, names):
    make_demo_data(tmp_path / "data", {names[0]: "circle", names[1]: "square", "ring": "ring"}, per_class=4, size=32)
    assert len(list((tmp_path / "data").iterdir())) == 3  # the file system keeps both folders
    refused(capsys, tmp_path / "data", tmp_path / "store", "ambiguous", repr(names[0]), repr(names[1]))


def test_train_and_val_folders_must_hold_the_same_classes(tmp_path, capsys):
    make_demo_data(tmp_path / "data" / "train", {"circle": "circle", "square": "square"}, per_class=3, size=32)
    make_demo_data(tmp_path / "data" / "val", {"circle": "circle", "ring": "ring"}, per_class=2, size=32)
    refused(capsys, tmp_path / "data", tmp_path / "store", "train/ and val/", "'ring'", "'square'")


def test_unreadable_files_are_listed_skipped_and_counted(tmp_path, capsys):
    data = make_demo_data(tmp_path / "data", {"circle": "circle", "square": "square"}, per_class=6, size=32)
    (data / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (data / "square" / "notes.txt").write_text("not a picture")
    (data / "square" / ".DS_Store").write_bytes(b"hidden files are not part of the dataset")
    code = run_cli(data, tmp_path / "store")
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped circle/broken.jpg" in out and "skipped square/notes.txt" in out
    assert "skipped 2 file(s)" in out and ".DS_Store" not in out
    report = json.loads((tmp_path / "store" / "mine.report.json").read_text())
    assert sorted(u["path"] for u in report["unreadable"]) == ["circle/broken.jpg", "square/notes.txt"]
    assert report["training"]["dataset"]["unreadable"] == 2
    assert report["training"]["dataset"]["images"] == 12


def test_an_existing_archive_is_refused_before_training(tmp_path, capsys):
    data = make_demo_data(tmp_path / "data", {"circle": "circle", "square": "square"}, per_class=4, size=32)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "mine.mar").write_bytes(b"someone else's archive")
    assert run_cli(data, tmp_path / "store") != 0
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "store" / "mine.mar").read_bytes() == b"someone else's archive"


def test_class_indices_are_the_sorted_folder_names_and_the_labels_follow_them(tmp_path, capsys):
    """The archive's labels.json is the training's own class list: index i is folder name i."""
    classes = {"b-circle": "circle", "A-square": "square", "10-ring": "ring", "9-cross": "cross"}
    data = make_demo_data(tmp_path / "data", classes, per_class=4, size=32)
    dataset = load_dataset(data, SPEC)
    assert dataset.classes == ["10-ring", "9-cross", "A-square", "b-circle"]
    for example in dataset.train + dataset.val:
        assert example.path.parent.name == dataset.classes[example.label]
    assert run_cli(data, tmp_path / "store") == 0
    with zipfile.ZipFile(tmp_path / "store" / "mine.mar") as z:
        labels = json.loads(z.read(LABELS_FILE))
        provenance = json.loads(z.read(PROVENANCE_FILE))
    assert labels == dataset.classes
    training = provenance["training"]
    assert provenance["weights"] == "finetuned:random(seed=0)" and training["base_weights"] == "random(seed=0)"
    assert training["dataset"]["fingerprint"] == dataset.fingerprint
    assert training["classes"] == {
        "10-ring": {"train": 3, "val": 1},
        "9-cross": {"train": 3, "val": 1},
        "A-square": {"train": 3, "val": 1},
        "b-circle": {"train": 3, "val": 1},
    }


def test_the_split_is_stratified_and_seeded(tmp_path):
    data = make_demo_data(tmp_path / "data", {"circle": "circle", "square": "square"}, per_class=10, size=32)
    a, b, c = (
        load_dataset(data, SPEC, 0.2, seed=1),
        load_dataset(data, SPEC, 0.2, seed=1),
        load_dataset(data, SPEC, 0.2, 2),
    )
    assert [e.path for e in a.val] == [e.path for e in b.val] != [e.path for e in c.val]
    assert a.counts() == {"circle": {"train": 8, "val": 2}, "square": {"train": 8, "val": 2}}


def test_training_preprocessing_is_the_servings_own(tmp_path):
    """Validation inputs are the handler's model_input of the file's bytes, bit for bit, and the
    augmented training inputs go through the handler's own to_tensor."""
    assert inputs.model_input is preprocess.model_input and inputs.to_tensor is preprocess.to_tensor
    data = make_demo_data(tmp_path / "data", {"circle": "circle", "square": "square"}, per_class=3, size=40)
    dataset = load_dataset(data, SPEC, 0.5)
    transform = inputs.serving_input(SPEC)
    for example in dataset.train + dataset.val:
        expected = preprocess.model_input(example.path.read_bytes(), SPEC, DEFAULTS.max_pixels)
        assert torch.equal(transform(example), expected)
    calls = []
    real = inputs.to_tensor

    def spy(image, spec):
        calls.append(spec)
        return real(image, spec)

    inputs.to_tensor = spy
    try:
        augmented = inputs.augmented_input(SPEC, torch.Generator().manual_seed(0))(dataset.train[0])
    finally:
        inputs.to_tensor = real
    assert calls == [SPEC] and augmented.shape == (3, SPEC.crop, SPEC.crop)


def test_ctrl_c_keeps_the_best_checkpoint_so_far():
    state = {"epoch": 0}
    val_losses = [0.9, 0.5, 0.7]

    def train_epoch(epoch):
        if epoch == 4:
            raise KeyboardInterrupt
        state["epoch"] = epoch
        return Metrics(1.0, 0.5)

    result = fit(
        "head",
        TrainConfig(epochs=10, patience=5),
        train_epoch,
        lambda: Metrics(val_losses[state["epoch"] - 1], 0.5),
        lambda: dict(state),
        Progress(),
    )
    assert result.interrupted and result.epochs_run == 3
    assert result.best_epoch == 2 and result.best_state == {"epoch": 2}


def test_ctrl_c_before_the_first_epoch_writes_nothing(tmp_path, capsys, monkeypatch):
    data = make_demo_data(tmp_path / "data", {"circle": "circle", "square": "square"}, per_class=4, size=32)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("service.finetune.train.F.cross_entropy", interrupted)
    assert run_cli(data, tmp_path / "store") != 0
    assert "nothing to save" in capsys.readouterr().err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_make_demo_data_writes_an_image_folder(tmp_path, capsys):
    assert cli.main(["--make-demo-data", str(tmp_path / "demo")]) == 0
    folders = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert len(folders) >= 4 and folders != sorted(folders, key=str.lower)  # names that sort surprisingly


def test_without_matplotlib_the_report_says_why_it_has_no_plot(tmp_path, monkeypatch):
    """matplotlib is dev-only: on a runtime install the plot is skipped with a message, nothing else."""
    from service.finetune.report import plot_confusion

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    why = plot_confusion([[1, 0], [0, 1]], ["a", "b"], tmp_path / "c.png")
    assert why and "matplotlib is not installed" in why and not (tmp_path / "c.png").exists()
