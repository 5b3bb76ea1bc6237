"""The archive builder: weight sources, what the archive carries, determinism, clear failures."""

from __future__ import annotations

import io
import json
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from torchvision import models
from torchvision.models import ResNet18_Weights

from handler.model_card import LABELS_FILE, MODEL_FILE, PREPROCESSING_FILE, PROVENANCE_FILE, sha256_file
from handler.settings import HandlerSettings
from scripts import build_archive


def build(tmp_path: Path, *argv: str) -> Path:
    args = build_archive.parse_args(["--export-path", str(tmp_path), "--force", *argv])
    return build_archive.build(args)


def archive_json(archive: Path, name: str) -> object:
    with zipfile.ZipFile(archive) as z:
        return json.loads(z.read(name))


def archive_model(archive: Path) -> torch.jit.ScriptModule:
    with zipfile.ZipFile(archive) as z:
        return torch.jit.load(io.BytesIO(z.read(MODEL_FILE)))


def test_random_weights_archive_carries_everything(tmp_path):
    archive = build(tmp_path, "--random-weights", "--seed", "3")
    assert archive == tmp_path / "resnet18.mar"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        model_config = yaml.safe_load(z.read("model-config.yaml"))
        model_bytes = z.read(MODEL_FILE)
    assert {MODEL_FILE, LABELS_FILE, PREPROCESSING_FILE, PROVENANCE_FILE, "torchserve_handler.py"} <= names
    assert "handler/images.py" in names and "MAR-INF/MANIFEST.json" in names
    assert archive_json(archive, LABELS_FILE) == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert archive_json(archive, PREPROCESSING_FILE) == {
        "resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
    }
    provenance = archive_json(archive, PROVENANCE_FILE)
    assert provenance["arch"] == "resnet18" and provenance["weights"] == "random(seed=3)"
    assert provenance["num_classes"] == 1000 and len(provenance["weights_sha256"]) == 64
    assert provenance["model_sha256"] == __import__("hashlib").sha256(model_bytes).hexdigest()
    assert HandlerSettings.from_yaml(model_config).topk == 3 and model_config["batchSize"] >= 1


def test_same_inputs_same_model(tmp_path):
    first = build(tmp_path / "a", "--random-weights", "--seed", "7")
    second = build(tmp_path / "b", "--random-weights", "--seed", "7")
    other = build(tmp_path / "c", "--random-weights", "--seed", "8")
    p1, p2, p3 = (archive_json(a, PROVENANCE_FILE) for a in (first, second, other))
    assert p1["weights_sha256"] == p2["weights_sha256"] != p3["weights_sha256"]
    assert p1["model_sha256"] == p2["model_sha256"]
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(archive_model(first)(x), archive_model(second)(x))


def test_local_weights_file(tmp_path):
    torch.manual_seed(5)
    state = models.resnet18().state_dict()
    weights_file = tmp_path / "resnet18-local.pth"
    torch.save(state, weights_file)
    archive = build(tmp_path / "store", "--weights", str(weights_file))
    provenance = archive_json(archive, PROVENANCE_FILE)
    assert provenance["weights"] == "file:resnet18-local.pth"
    assert provenance["weights_file_sha256"] == sha256_file(weights_file)
    random_build = build(tmp_path / "random", "--random-weights", "--seed", "5")
    assert provenance["weights_sha256"] == archive_json(random_build, PROVENANCE_FILE)["weights_sha256"]


def test_own_torchscript_with_index_to_name(tmp_path):
    classes = {"0": ["n0", "apple"], "1": ["n1", "pear"], "2": ["n2", "plum"]}
    labels = tmp_path / "index_to_name.json"
    labels.write_text(json.dumps(classes))
    torch.manual_seed(0)
    scripted = torch.jit.script(models.resnet18(num_classes=3).eval())
    model_file = tmp_path / "fruit.pt"
    torch.jit.save(scripted, str(model_file))
    archive = build(tmp_path / "store", "--torchscript", str(model_file), "--labels", str(labels),
                    "--model-name", "fruit", "--version", "2.0", "--resize", "160", "--crop", "128")
    assert archive.name == "fruit.mar"
    assert archive_json(archive, LABELS_FILE) == ["apple", "pear", "plum"]
    assert archive_json(archive, PREPROCESSING_FILE)["crop"] == 128
    provenance = archive_json(archive, PROVENANCE_FILE)
    assert provenance["weights"] == "torchscript:fruit.pt" and provenance["arch"] == "torchscript"
    manifest = archive_json(archive, "MAR-INF/MANIFEST.json")
    assert manifest["model"]["modelName"] == "fruit" and manifest["model"]["modelVersion"] == "2.0"


def test_torchscript_with_wrong_label_count_is_refused(tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["a", "b"]))
    model_file = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(models.resnet18(num_classes=3).eval()), str(model_file))
    with pytest.raises(build_archive.BuildError, match="2 classes"):
        build(tmp_path / "store", "--torchscript", str(model_file), "--labels", str(labels))


def test_other_architecture(tmp_path):
    archive = build(tmp_path, "--arch", "mobilenet_v3_small", "--model-name", "mobilenet", "--random-weights")
    provenance = archive_json(archive, PROVENANCE_FILE)
    assert provenance["arch"] == "mobilenet_v3_small" and len(archive_json(archive, LABELS_FILE)) == 1000


def test_offline_official_weights_fail_with_the_way_out(tmp_path, monkeypatch, capsys):
    """No network: the message names the file, where it goes, and the two other ways."""

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(models.WeightsEnum, "get_state_dict", offline)
    assert build_archive.main(["--export-path", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in message and "--weights" in message and "--random-weights" in message
    assert not list(tmp_path.glob("*.mar"))


def test_existing_archive_needs_force(tmp_path):
    build(tmp_path, "--random-weights")
    with pytest.raises(build_archive.BuildError, match="--force"):
        build_archive.build(build_archive.parse_args(["--export-path", str(tmp_path), "--random-weights"]))


def test_provenance_json_writes_the_same_keys(tmp_path):
    """Deployed handlers read provenance.json: the typed record leaves out what a build did not have."""
    provenance = archive_json(build(tmp_path, "--random-weights"), PROVENANCE_FILE)
    assert set(provenance) == {
        "arch", "model_sha256", "num_classes", "torch", "torchvision", "weights", "weights_sha256",
        "runtime", "precision", "version",
    }
    assert (provenance["runtime"], provenance["precision"]) == ("torchscript", "fp32")
    assert provenance["version"] == "1.0"  # a model's first version


def test_version_defaults_to_one_above_the_highest_in_the_store(tmp_path):
    """Rebuilding an archive keeps its version; beside a deployed one (<name>-v<N>.mar) it counts up."""
    first = build(tmp_path, "--random-weights")
    assert build(tmp_path, "--random-weights", "--force") == first  # replaces it: still the first version
    assert archive_json(first, "MAR-INF/MANIFEST.json")["model"]["modelVersion"] == "1.0"
    first.rename(first.with_name("resnet18-v1.0.mar"))
    second = build(tmp_path, "--random-weights")
    assert archive_json(second, "MAR-INF/MANIFEST.json")["model"]["modelVersion"] == "2"
    assert archive_json(second, PROVENANCE_FILE)["version"] == "2"
    third = build(tmp_path, "--random-weights", "--force", "--version", "7")
    assert archive_json(third, "MAR-INF/MANIFEST.json")["model"]["modelVersion"] == "7"


def test_calibration_folder_is_checked_before_any_work(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    with pytest.raises(build_archive.BuildError, match="no photos in it"):
        build(tmp_path, "--random-weights", "--quantize", "int8", "--calibration", str(empty))
    with pytest.raises(build_archive.BuildError, match="not a folder of photos"):
        build(tmp_path, "--random-weights", "--quantize", "int8", "--calibration", str(tmp_path / "missing"))
    with pytest.raises(build_archive.BuildError, match="official int8 weights come calibrated"):
        build(tmp_path, "--quantize", "int8", "--calibration", str(empty))
    with pytest.raises(SystemExit):
        build_archive.parse_args(["--random-weights", "--calibration", str(empty)])
    assert not list(tmp_path.glob("*.mar"))


def test_a_broken_calibration_photo_is_named(tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    (album / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(build_archive.BuildError, match="cannot calibrate on .*broken.jpg"):
        build(tmp_path / "store", "--random-weights", "--quantize", "int8", "--calibration", str(album))


def test_interpolation_and_onnxruntime_int8_flags_are_checked(tmp_path):
    """--interpolation takes the resize filters the handler has; int8 from a --torchscript model
    goes through ONNX Runtime's quantization, and int8 from fp32 weights on ONNX Runtime does not
    take torchvision's pre-quantized (downloaded) ones."""
    from service.archive.builder import BuildRequest, check_request, choose_source

    with pytest.raises(SystemExit):
        build_archive.parse_args(["--random-weights", "--interpolation", "sharpest"])
    with pytest.raises(build_archive.BuildError, match="--interpolation sharpest: choose one of"):
        check_request(BuildRequest(random_weights=True, interpolation="sharpest"), tmp_path / "m.mar")
    own = ["--torchscript", "m.pt", "--labels", "l.json", "--quantize", "int8"]
    with pytest.raises(SystemExit):
        build_archive.parse_args(own)
    assert build_archive.parse_args([*own, "--runtime", "onnxruntime"]).quantize == "int8"
    with pytest.raises(build_archive.BuildError, match="runs on --runtime torchscript or onnxruntime"):
        check_request(BuildRequest(random_weights=True, quantize="int8", runtime="openvino"), tmp_path / "m.mar")
    source = choose_source(BuildRequest(random_weights=True, quantize="int8", runtime="onnxruntime"))
    assert source.weights == "random(seed=0)" and source.calibration is None
