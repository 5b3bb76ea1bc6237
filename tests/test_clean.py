"""`make clean` removes what the build made and keeps what a person made (issue: data loss on clean)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fake_archive(path: Path, provenance: dict) -> Path:
    """An archive as far as `make clean` reads one: a zip with provenance.json."""
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr("provenance.json", json.dumps(provenance))
    return path


def test_make_clean_keeps_feedback_and_user_archives(tmp_path):
    tree = tmp_path / "checkout"
    for part in ("Makefile", "scripts/__init__.py", "scripts/clean.py", "service/__init__.py", "service/names.py"):
        (tree / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, tree / part)
    store, run = tree / "model_store", tree / "var"
    photo = run / "feedback" / "tabby" / "a1b2.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"\xff\xd8 a person's correction")
    for state in ("key_file.json", "config.properties", "logs/ts_log.log"):
        (run / state).parent.mkdir(parents=True, exist_ok=True)
        (run / state).write_text("run state")
    (tree / "test-output").mkdir()
    store.mkdir()
    default = fake_archive(store / "resnet18.mar", {"weights": "random(seed=0)", "arch": "resnet18"})
    tuned = fake_archive(store / "shapes.mar", {"weights": "file:base", "training": {"epochs": 3}})
    tuned_default = fake_archive(store / "mine.mar", {"weights": "torchscript:mine.pt"})
    report = store / "shapes.report.json"
    report.write_text("{}")

    result = subprocess.run(["make", "-s", "clean"], cwd=tree, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert photo.read_bytes() == b"\xff\xd8 a person's correction"
    assert tuned.is_file() and tuned_default.is_file() and report.is_file()
    assert not default.exists() and not (tree / "test-output").exists()
    assert sorted(p.name for p in run.iterdir()) == ["feedback"]
    assert "keeping  var/feedback" in result.stdout and "removing model_store/resnet18.mar" in result.stdout

    # A fine-tuned model saved under the default name is a person's work too.
    fake_archive(store / "resnet18.mar", {"weights": "IMAGENET1K_V1", "training": {"epochs": 2}})
    subprocess.run(["make", "-s", "clean"], cwd=tree, check=True, capture_output=True, timeout=60)
    assert (store / "resnet18.mar").is_file() and photo.is_file()
