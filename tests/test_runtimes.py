"""Archives that run on ONNX Runtime or OpenVINO (scripts/build_archive.py --runtime): the same answers
as the TorchScript archive through a real TorchServe, per-request errors, the integrity check of the
exported file, and clear errors where a runtime package or bf16 is missing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch
import yaml
from ts.context import Context

from handler.model_card import MODEL_FILE, ONNX_FILE, ModelCard, sha256_file
from handler.torchserve_handler import ImageClassifierHandler
from scripts import build_archive
from service.archive import export
from service.local.torchserve import TorchServe
from service.names import ROOT
from service.photos import photos
from tests.conftest import MODEL, TEST_MODEL_CONFIG, build_test_archive
from tests.test_handler import run_batch
from tests.test_runtime_install import run, runtime_env, weights_and_photos  # noqa: F401 (fixtures)

RUNTIMES = ("onnxruntime", "openvino")
BROKEN = b"not an image at all"


def model_name(runtime: str) -> str:
    return f"{MODEL}-{runtime}"


@pytest.fixture(scope="module")
def runtime_store(tmp_path_factory) -> Path:
    """One store with an fp32 archive per runtime (the same random weights as the session's TorchScript one)."""
    store = tmp_path_factory.mktemp("runtime_store")
    for runtime in RUNTIMES:
        build_test_archive(store, TEST_MODEL_CONFIG, runtime=runtime, model_name=model_name(runtime))
    return store


@pytest.fixture(scope="module")
def runtime_server(runtime_store, tmp_path_factory):
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("runtime_run"), runtime_store) as server:
        yield server


def probabilities(client, model: str, image: bytes) -> tuple[dict[int, float], dict]:
    """Every class's probability (top-k of all classes) and the answer's model block."""
    response = client.predict(model, image, topk=1000)
    assert response.status_code == 200, response.text
    answer = response.json()
    return {p["index"]: p["probability"] for p in answer["predictions"]}, answer["model"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_answers_like_the_torchscript_archive(runtime, runtime_server, client):
    runtime_client = runtime_server.client()
    for name, path in photos().items():
        image = path.read_bytes()
        expected, reference_model = probabilities(client, MODEL, image)
        actual, served_model = probabilities(runtime_client, model_name(runtime), image)
        worst = max(abs(expected[i] - actual[i]) for i in expected)
        assert worst <= 1e-4, (name, worst)
        assert reference_model["runtime"] == "torchscript" and reference_model["precision"] == "fp32"
        assert served_model["runtime"] == runtime and served_model["precision"] == "fp32"  # the hint is set: fp32
    described = runtime_client.describe_model(model_name(runtime), customized=True).json()[0]["customizedMetadata"]
    assert described["model"]["runtime"] == runtime and described["serving"] is True


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_broken_image_fails_alone_on_every_runtime(runtime, runtime_server):
    runtime_client = runtime_server.client()
    good = photos()["chelsea"].read_bytes()
    alone = runtime_client.predict(model_name(runtime), good).json()["predictions"]
    with ThreadPoolExecutor(3) as pool:  # concurrent: they share a batch (maxBatchDelay 150 ms)
        answers = list(pool.map(lambda body: runtime_client.predict(model_name(runtime), body), [good, BROKEN, good]))
    assert [a.status_code for a in answers] == [200, 415, 200]
    assert answers[1].json()["type"] == "UnsupportedImage"
    for answer in (answers[0], answers[2]):
        assert [p["index"] for p in answer.json()["predictions"]] == [p["index"] for p in alone]
    auth = {"Authorization": f"Bearer {runtime_client.keys['inference']}"}
    body = {"instances": [base64.b64encode(x).decode() for x in (good, BROKEN, good)]}
    url = f"{runtime_server.endpoints.inference}/v1/models/{model_name(runtime)}:predict"
    several = requests.post(url, json=body, headers=auth, timeout=60)
    assert several.status_code == 200, several.text
    predictions = several.json()["predictions"]
    assert predictions[1]["type"] == "UnsupportedImage"
    assert [p["index"] for p in predictions[0]] == [p["index"] for p in predictions[2]] == [p["index"] for p in alone]


def test_the_archive_records_runtime_precision_and_every_model_file(runtime_store, tmp_path):
    with zipfile.ZipFile(runtime_store / f"{model_name('onnxruntime')}.mar") as z:
        z.extractall(tmp_path)
    provenance = ModelCard.read(tmp_path).provenance
    assert provenance.runtime == "onnxruntime" and provenance.precision == "fp32"
    assert provenance.model_files == {ONNX_FILE: sha256_file(tmp_path / ONNX_FILE)}
    assert provenance.model_sha256 == sha256_file(tmp_path / MODEL_FILE)  # model.pt stays the source of truth


def unpacked_handler(store: Path, name: str, directory: Path, change=None) -> tuple[ImageClassifierHandler, Context]:
    """The archive unpacked, `change(directory)` applied, then initialized as TorchServe would."""
    with zipfile.ZipFile(store / f"{name}.mar") as z:
        z.extractall(directory)
    if change:
        change(directory)
    manifest = json.loads((directory / "MAR-INF" / "MANIFEST.json").read_text())
    model_yaml = yaml.safe_load((directory / manifest["model"]["configFile"]).read_text())
    context = Context(name, str(directory), manifest, 4, None, "0.12.0", model_yaml_config=model_yaml)
    handler = ImageClassifierHandler()
    handler.initialize(context)
    return handler, context


def tamper(directory: Path) -> None:
    with open(directory / ONNX_FILE, "ab") as f:
        f.write(b"\0")


@pytest.mark.parametrize("change, words", [(tamper, "has sha256"), (lambda d: (d / ONNX_FILE).unlink(), "missing")])
def test_a_tampered_or_missing_exported_model_is_refused(runtime_store, tmp_path, change, words):
    handler, context = unpacked_handler(runtime_store, model_name("onnxruntime"), tmp_path, change)
    (status, answer), = run_batch((handler, context), [{"body": photos()["chelsea"].read_bytes()}])
    assert status == 503 and answer["type"] == "ArchiveIntegrityError"
    assert ONNX_FILE in answer["message"] and words in answer["message"]
    assert handler.describe()["serving"] is False


def test_a_missing_runtime_package_in_the_worker_is_answered_not_crashed(runtime_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    handler, context = unpacked_handler(runtime_store, model_name("onnxruntime"), tmp_path)
    (status, answer), = run_batch((handler, context), [{"body": photos()["chelsea"].read_bytes()}])
    assert status == 503 and answer["type"] == "RuntimeMissing"
    assert "the Python package onnxruntime is not installed" in answer["message"]


BLOCK_RUNTIMES = '''
# As if the runtime packages were not installed: import fails, importlib.util.find_spec says None.
import sys

sys.modules["onnxruntime"] = None
sys.modules["openvino"] = None
'''


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_missing_runtime_package_is_a_clear_build_error(runtime, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCK_RUNTIMES))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    argv = ["--random-weights", "--runtime", runtime, "--export-path", str(tmp_path / "store")]
    result = run(env, "scripts/build_archive.py", *argv, timeout=180)
    assert result.returncode == 2, result.stderr
    assert f"--runtime {runtime} needs the Python package {runtime}" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "store").exists()


def test_a_runtime_only_install_checks_the_export_on_the_users_photos(runtime_env, weights_and_photos, tmp_path):  # noqa: F811
    """The sample photos are dev-only: the export check names --calibration, then runs on that folder."""
    weights, album, _ = weights_and_photos
    argv = ["scripts/build_archive.py", "--weights", str(weights), "--runtime", "openvino"]
    argv += ["--export-path", str(tmp_path)]
    refused = run(runtime_env, *argv, timeout=180)
    assert refused.returncode == 2 and "--calibration /path/to/photos" in refused.stderr, refused.stderr
    assert "checking the openvino export" in refused.stderr
    built = run(runtime_env, *argv, "--calibration", str(album))
    assert built.returncode == 0, built.stderr
    assert "openvino fp32 on photos from album" in built.stdout and (tmp_path / f"{MODEL}.mar").is_file()


def test_an_export_that_differs_from_torchscript_fails_the_build(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_FP32_LOGIT_DIFFERENCE", 0.0)  # any rounding difference now counts
    argv = ["--random-weights", "--runtime", "onnxruntime", "--export-path", str(tmp_path)]
    with pytest.raises(build_archive.BuildError, match="export differs from TorchScript on sample photos"):
        build_archive.build(build_archive.parse_args(argv))
    assert not list(tmp_path.glob("*.mar"))


def test_bf16_needs_openvino_and_a_cpu_that_has_it(monkeypatch):
    monkeypatch.setattr(export, "cpu_flags", lambda: {"avx2", "avx512f"})
    with pytest.raises(build_archive.BuildError, match="no native bf16"):
        export.check_runtime_request("openvino", "bf16", None)
    monkeypatch.setattr(export, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    export.check_runtime_request("openvino", "bf16", None)
    with pytest.raises(build_archive.BuildError, match="runs on --runtime openvino"):
        export.check_runtime_request("onnxruntime", "bf16", None)
    with pytest.raises(build_archive.BuildError, match="--quantize int8 runs on --runtime torchscript"):
        export.check_runtime_request("openvino", "fp32", "int8")


def test_a_torchscript_worker_imports_no_other_runtime(model_store, tmp_path):
    """Import-light workers: the runtime packages load only for an archive that names them."""
    shutil.copy(model_store / f"{MODEL}.mar", tmp_path / f"{MODEL}.mar")
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tests.test_runtimes import unpacked_handler
        handler, _ = unpacked_handler(Path({str(tmp_path)!r}), {MODEL!r}, Path({str(tmp_path / "unpacked")!r}))
        assert handler.refusal is None
        print(sorted(m for m in ("onnxruntime", "openvino", "onnx") if m in sys.modules))
    """)
    result = run({**os.environ, "PYTHONPATH": str(ROOT)}, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_another_runtime_gets_the_threads_and_torch_stays_on_one(runtime_store, tmp_path, monkeypatch):
    """Shared cores with ONNX Runtime: a lone request's forward pass runs on every core in the
    runtime's own pool, while torch (small ops only) stays on one thread, whose idle OpenMP
    threads would otherwise spin beside the runtime's (a lone request 19.4 -> 12.6 ms measured)."""
    from handler import cores

    if cores.available_cores() < 2:
        pytest.skip("needs 2 cores")
    monkeypatch.setattr(cores, "run_queue_wait_ns", lambda: 0)  # other programs on this machine do not count
    handler, context = unpacked_handler(runtime_store, model_name("onnxruntime"), tmp_path)
    seen: list[tuple[int | None, int]] = []
    model = handler.model

    class Spy:
        runtime, precision = model.runtime, model.precision

        def __call__(self, inputs, threads=None):
            seen.append((threads, torch.get_num_threads()))
            return model(inputs, threads)

    handler.model = Spy()
    (status, _), = run_batch((handler, context), [{"body": photos()["chelsea"].read_bytes()}])
    assert status == 200 and seen == [(cores.available_cores(), 1)]
