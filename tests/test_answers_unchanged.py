"""The handler's exact answers, byte for byte, on the sample photos, for every protocol and error path.

A golden file (tests/data/answers_unchanged.json) holds, for each request of a fixed sequence of
batches, the status code and phrase TorchServe would send, the content type, and the answer's
bytes (their SHA-256 and length, and their text for reading a difference). Any change to any byte
of any answer fails this test: a refactoring of the handler must leave every answer as it is.

The handler runs in process with TorchServe's own Context (tests/test_handler.py's load_handler) on
the random-weights test archive (seed 0). Three things would make answers differ from run to run,
and each is pinned here rather than compared loosely:
  - intra_op_threads 1: the same summation order in every forward pass, whatever the machine's load
    (the shared policy's thread count follows other programs' use of the cores);
  - explain_share 1: an explanation earns its own time back, so the time budget never refuses one
    (its 503 names a wait in seconds); the per-batch bound of one explanation is still the served one;
  - every v2 answer's id is the request's own "id" or TorchServe's request id, set here per batch.
The explanation's "ms" (its own duration) is the only field normalised, explicitly, to "<ms>".

The answers depend on the CPU's arithmetic (torch picks kernels by instruction set), so the golden
file records the machine it was made on; regenerate it, on unchanged handler code, with
    .venv/bin/python -m tests.test_answers_unchanged
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import re
import sys
import tempfile
from pathlib import Path

import numpy
import PIL
import pytest
import torch
from ts.context import RequestProcessor

from service.photos import photos
from tests.conftest import TEST_MODEL_CONFIG, build_test_archive
from tests.test_handler import load_handler

GOLDEN = Path(__file__).parent / "data" / "answers_unchanged.json"
SETTINGS = {"intra_op_threads": 1, "explain_share": 1.0}
BROKEN = b"this is not an image"
EXPLAIN = {"explain": "True"}
PREDICT = {"explain": "False"}  # what TorchServe's frontend sets on /predictions
# An explanation's own duration, as a JSON key (also inside a v2 BYTES output's JSON text: escaped).
_MS = re.compile(r'(\\?"ms\\?":)-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?')
_OVERLAY = re.compile(r'(\\?"overlay_png\\?":\\?")([A-Za-z0-9+/=]+)')


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2(data: list, request_id: str | None = None, **extra) -> dict:
    body: dict = {"inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}], **extra}
    if request_id is not None:
        body["id"] = request_id
    return body


def batches() -> list[tuple[str, list[tuple[str, dict, dict]]]]:
    """(batch name, [(request name, TorchServe request dict, headers)]), in the order they are sent."""
    p = {name: path.read_bytes() for name, path in photos().items()}
    hopper, chelsea, coffee, rocket = p["grace_hopper"], p["chelsea"], p["coffee"], p["rocket"]
    return [
        ("single", [("plain raw body", {"body": hopper}, {})]),
        ("protocols", [
            ("plain raw body", {"body": chelsea}, {}),
            ("multipart, one file broken", {"second": coffee, "broken": BROKEN, "first": hopper}, {}),
            ("json data (parsed)", {"body": {"data": b64(chelsea)}}, {}),
            ("json data (bytes) topk 5", {"body": json.dumps({"data": b64(rocket), "topk": 5}).encode()}, {}),
            ("base64 text body", {"body": b64(coffee)}, {}),
            ("v1 instances, two broken",
             {"body": {"instances": [{"b64": b64(hopper)}, b64(BROKEN), b64(coffee), "@@not base64@@"]}}, {}),
            ("v1 one instance topk 2", {"body": {"instances": [{"data": b64(rocket)}], "topk": 2}}, {}),
            ("v2 inputs, one broken, own id, topk 2",
             {"body": v2([b64(chelsea), b64(BROKEN), b64(hopper)], "golden-v2", parameters={"topk": 2})}, {}),
            ("v2 one image, TorchServe id", {"body": json.dumps(v2([b64(hopper)])).encode()}, {}),
            ("v2 wholly bad image", {"body": v2([b64(BROKEN)], "golden-bad")}, {}),
            ("v2 every image bad", {"body": v2([b64(BROKEN), "@@"], "golden-all-bad")}, {}),
            ("multipart with X-TopK 1", {"a": rocket, "b": coffee}, {"X-TopK": "1"}),
        ]),
        ("errors", [
            ("bad topk field", {"body": hopper, "topk": b"0"}, {}),
            ("bad X-TopK header", {"body": hopper}, {"X-TopK": "abc"}),
            ("v2 topk over the classes", {"body": v2([b64(hopper)], "golden-topk", parameters={"topk": 1001})}, {}),
            ("v1 bad topk", {"body": {"instances": [b64(hopper)], "topk": "x"}}, {}),
            ("non-image", {"body": b"not an image"}, {}),
            ("empty body", {"body": b""}, {}),
            ("no body", {}, {}),
            ("invalid base64 text", {"body": "not base64 at all!"}, {}),
            ("json without an image", {"body": {"something": 1}}, {}),
            ("v1 every instance bad", {"body": {"instances": [b64(BROKEN), "@@"]}}, {}),
            ("v1 too many images", {"body": {"instances": [b64(b"x")] * 33}}, {}),
            ("v2 two inputs", {"body": {"id": "golden-2in", "inputs": [v2(["a"])["inputs"][0]] * 2}}, {}),
            ("describe", {}, {"describe": "True"}),
            ("prediction beside them", {"body": coffee}, PREDICT),
        ]),
        *explanation_batches(p),
    ]


def explanation_batches(p: dict[str, bytes]) -> list[tuple[str, list[tuple[str, dict, dict]]]]:
    """Explanation requests, each in its own batch since a batch explains one image at most (the
    refusals' batch shows the 503 of a second one)."""
    hopper, chelsea, coffee, rocket = p["grace_hopper"], p["chelsea"], p["coffee"], p["rocket"]
    return [
        ("explain", [
            ("prediction", {"body": hopper}, PREDICT),
            ("explanation", {"body": hopper}, EXPLAIN),
        ]),
        ("explain v1", [
            ("v1 explanation, target 7", {"body": json.dumps({"instances": [{"data": b64(chelsea)}],
                                                              "target": "7"}).encode()}, EXPLAIN),
        ]),
        ("explain v2", [
            ("v2 explanation, target 3",
             {"body": v2([b64(coffee)], "golden-explain", parameters={"target": "3"})}, EXPLAIN),
        ]),
        ("explain refusals", [
            ("explanation", {"body": rocket, "target": b"tabby"}, EXPLAIN),
            ("second explanation: busy", {"body": hopper}, EXPLAIN),
            ("unknown class", {"body": hopper, "target": b"no such class"}, EXPLAIN),
            ("two images", {"a": hopper, "b": chelsea}, EXPLAIN),
            ("v2 two images", {"body": v2([b64(hopper), b64(chelsea)], "golden-explain-2")}, EXPLAIN),
            ("bad topk", {"body": hopper, "topk": b"0"}, EXPLAIN),
            ("prediction", {"body": chelsea}, PREDICT),
        ]),
        ("explain broken image", [("explanation of a non-image", {"body": BROKEN}, EXPLAIN)]),
    ]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def answer_record(batch: str, name: str, status: tuple, content_type: str | None, body: str) -> dict:
    """One answer: exact bytes (hash, length) once "ms" is normalised, and its text with each overlay
    PNG shown by its hash (the hash of the whole text already covers the PNG's bytes)."""
    normalised = _MS.sub(r"\1<ms>", body)
    readable = _OVERLAY.sub(lambda m: f"{m.group(1)}sha256:{sha256(m.group(2))}", normalised)
    return {
        "batch": batch,
        "request": name,
        "status": status[0],
        "phrase": status[1],
        "content_type": content_type,
        "bytes": len(normalised.encode("utf-8")),
        "sha256": sha256(normalised),
        "body": readable,
    }


def record(model_store: Path, model_dir: Path) -> list[dict]:
    """Every batch through a fresh handler, in order (a compiled model's first passes at a new batch
    size may differ in their last bits from later ones, so the history is part of the answers)."""
    handler, context = load_handler(model_store, model_dir, **SETTINGS)
    records = []
    for batch, requests in batches():
        context.request_processor = [RequestProcessor(dict(headers)) for _, _, headers in requests]
        context.request_ids = {i: f"ts-{batch}-{i}" for i in range(len(requests))}
        answers = handler.handle([request for _, request, _ in requests], context)
        assert len(answers) == len(requests)
        for i, ((name, _, _), body) in enumerate(zip(requests, answers, strict=True)):
            assert isinstance(body, str), f"{batch}/{name}: the handler answers text"
            records.append(answer_record(batch, name, context.get_response_status(i),
                                         context.get_response_content_type(i), body))
    return records


def environment() -> dict[str, str]:
    """What the answers' last bits depend on besides the code."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
    }


@pytest.fixture(scope="module")
def recorded(model_store, tmp_path_factory) -> list[dict]:
    return record(model_store, tmp_path_factory.mktemp("model_dir"))


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_every_answer_is_byte_identical(recorded, golden):
    expected = golden["answers"]
    assert [(r["batch"], r["request"]) for r in recorded] == [(g["batch"], g["request"]) for g in expected]
    where = "" if golden["environment"] == environment() else (
        f"\n(the golden file was made on {golden['environment']}, this is {environment()}: "
        "if the handler's code is unchanged, the difference is the machine's arithmetic)"
    )
    changed = [f"{r['batch']} / {r['request']}" for r, g in zip(recorded, expected, strict=True) if r != g]
    for r, g in zip(recorded, expected, strict=True):
        assert r == g, f"{len(changed)} answer(s) changed: {changed}{where}"


def test_golden_file_covers_every_protocol_and_error_path(golden):
    """The sequence above really exercises what it claims (read from the golden answers themselves)."""
    answers = golden["answers"]
    statuses = {a["status"] for a in answers}
    assert {200, 400, 413, 415, 503} <= statuses
    bodies = [json.loads(a["body"].replace("<ms>", "0")) for a in answers]
    assert any("results" in b for b in bodies)  # multipart, several images
    assert any("outputs" in b and any(o["name"] == "error" for o in b["outputs"]) for b in bodies)  # v2 failures
    assert any("explanations" in b for b in bodies) and any(
        "outputs" in b and any(o["name"] == "explanation" for o in b["outputs"]) for b in bodies)
    kinds = {b.get("type") for b in bodies}
    assert {"InvalidParameter", "UnsupportedImage", "MissingImage", "InvalidBase64", "TooManyImages",
            "UnknownClass", "ExplanationBusy", "InvalidRequest"} <= kinds
    assert sum("<ms>" in a["body"] for a in answers) == 4  # every explanation's duration, and nothing else


def write_golden() -> None:
    """Regenerate the golden file from the handler as it is (only on unchanged handler code)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = build_test_archive(Path(tmp) / "store", TEST_MODEL_CONFIG)
        answers = record(store, Path(tmp) / "model_dir")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"environment": environment(), "answers": answers}, indent=1) + "\n")
    print(f"wrote {len(answers)} answers to {GOLDEN}")


if __name__ == "__main__":
    sys.exit(write_golden())
