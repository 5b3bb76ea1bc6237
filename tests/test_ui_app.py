"""The Streamlit page's states without a browser (Streamlit's AppTest), and its client's token renewal.

Real TorchServe for the good and the bad-file answers; a closed port for "server down"; a tiny
stub HTTP server for answers a healthy TorchServe will not give on demand (token refused, busy).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import streamlit as st
from streamlit.testing.v1 import AppTest

from handler.model_card import LABELS_FILE
from handler.settings import DEFAULTS
from service.client.api import DEFAULT_KEY_FILE, Endpoints, Settings, read_keys
from service.local.torchserve import TorchServe, free_port
from service.photos import grace_hopper, phone_photo_jpeg, photos
from tests.conftest import MODEL, ROOT
from ui.logic import classify, percent, server_state

APP = str(ROOT / "ui" / "app.py")
TIMEOUT = 60


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """The page caches the server state for a few seconds; each test starts from a clean slate."""
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def point_at(monkeypatch: pytest.MonkeyPatch, endpoints: Endpoints, key_file: Path) -> None:
    monkeypatch.setenv("TS_INFERENCE_URL", endpoints.inference)
    monkeypatch.setenv("TS_MANAGEMENT_URL", endpoints.management)
    monkeypatch.setenv("TS_KEY_FILE", str(key_file))
    monkeypatch.delenv("TS_INFERENCE_KEY", raising=False)
    monkeypatch.delenv("TS_MODEL", raising=False)


def rendered_text(at: AppTest) -> str:
    """Everything the page shows as text (what would reach the browser), for leak and traceback checks."""
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "success", "info", "title", "header"):
        parts += [str(element.value) for element in getattr(at, kind)]
    parts += [p.text for p in at.get("progress")]
    return "\n".join(parts)


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, *paths: Path | tuple[str, bytes]) -> AppTest:
    files = []
    for item in paths:
        name, data = (item.name, item.read_bytes()) if isinstance(item, Path) else item
        files.append((name, data, "application/octet-stream"))
    at.file_uploader[0].set_value(files).run()
    assert not at.exception, at.exception
    return at


# --- server down ---------------------------------------------------------------------------------


def test_server_down_says_how_to_start_it(monkeypatch, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    point_at(monkeypatch, Endpoints(closed, closed), tmp_path / "missing.json")
    at = run_app()
    problem = at.sidebar.error[0].value
    assert "not running" in problem and "make run" in problem and closed in problem
    assert not at.sidebar.success

    upload(at, grace_hopper())  # a photo dropped anyway gets the same friendly message, no traceback
    assert any("not running" in e.value for e in at.main.error)
    assert not at.get("progress")


# --- a real TorchServe ---------------------------------------------------------------------------


@pytest.mark.server
def test_good_answer_shows_model_workers_and_labels(monkeypatch, torchserve):
    point_at(monkeypatch, torchserve.endpoints, torchserve.key_file)
    at = run_app()
    assert at.title[0].value == "Image classifier"
    assert at.sidebar.success[0].value == "TorchServe is reachable"
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert f"`{MODEL}` version `1.0`" in sidebar and "random(seed=0)" in sidebar
    assert re.search(r"\*\*Workers:\*\* \d+ ready \(max \d+\)", sidebar)  # other tests may scale workers
    assert "random weights" in at.sidebar.warning[0].value  # the server's own warning
    assert "mean nothing" in at.main.warning[0].value

    upload(at, grace_hopper())
    bars = at.get("progress")
    assert len(bars) == DEFAULTS.topk  # the slider starts at the handler's default
    assert [b.value for b in bars] == sorted((b.value for b in bars), reverse=True)
    assert all(b.text.startswith(f"{i}. **") and b.text.endswith("%") for i, b in enumerate(bars, start=1))
    assert not at.main.error

    at.sidebar.slider[0].set_value(5).run()  # the top-k control
    assert len(at.get("progress")) == 5

    text = rendered_text(at)
    for name, key in read_keys(torchserve.key_file).items():
        assert key not in text, f"the {name} key is on the page"


@pytest.mark.server
def test_bad_file_gets_its_own_error_and_the_others_their_results(monkeypatch, torchserve):
    point_at(monkeypatch, torchserve.endpoints, torchserve.key_file)
    at = upload(run_app(), ("notes.jpg", b"this is a text file, not a photo"), photos()["chelsea"])
    errors = [e.value for e in at.main.error]
    assert len(errors) == 1 and "**notes.jpg** is not an image" in errors[0]
    assert len(at.get("progress")) == DEFAULTS.topk
    assert "Traceback" not in rendered_text(at)


@pytest.mark.server
def test_large_phone_photo_is_sent_as_it_is(monkeypatch, torchserve):
    """A 12 MP JPEG goes to the server untouched (it decodes at reduced size); the page only shows a thumbnail."""
    point_at(monkeypatch, torchserve.endpoints, torchserve.key_file)
    photo = phone_photo_jpeg(12)
    assert len(photo) > 1_000_000
    at = upload(run_app(), ("phone.jpg", photo))
    assert len(at.get("progress")) == DEFAULTS.topk and not at.main.error


# --- answers a healthy server will not give on demand: a stub --------------------------------------


class Stub(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?")[0]
        status, body = next((a for prefix, a in self.answers.items() if path.startswith(prefix)), (404, b""))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub(monkeypatch, tmp_path) -> Iterator[dict[str, tuple[int, bytes]]]:
    """A fake inference API; tests fill in {path prefix: (status, body)}."""
    answers: dict[str, tuple[int, bytes]] = {}
    handler = type("StubHandler", (Stub,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    point_at(monkeypatch, Endpoints(url, url), tmp_path / "missing.json")
    yield answers
    server.shutdown()
    server.server_close()


def torchserve_error(code: int, kind: str, message: str) -> bytes:
    return json.dumps({"code": code, "type": kind, "message": message}).encode()


TOKEN_REFUSED = torchserve_error(400, "InvalidKeyException", "Token Authorization failed.")
GOOD = json.dumps(
    {
        "predictions": [  # out of order on purpose: the page sorts, highest first
            {"label": "tiger cat", "index": 282, "probability": 0.2},
            {"label": "tabby", "index": 281, "probability": 0.7},
            {"label": "Egyptian cat", "index": 285, "probability": 0.05},
        ],
        "model": {"name": "resnet18", "version": "1.0", "arch": "resnet18", "weights": "IMAGENET1K_V1"},
    }
).encode()


def test_token_refused(stub):
    stub["/ping"] = (400, TOKEN_REFUSED)
    at = run_app()
    problem = at.sidebar.error[0].value
    assert "refused the inference token" in problem and "TS_KEY_FILE" in problem


def test_busy_server_and_too_large_image(stub):
    stub["/ping"] = (200, b'{"status": "Healthy"}')
    stub["/predictions"] = (200, GOOD)
    at = run_app()
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "IMAGENET1K_V1" in sidebar and "unknown" in sidebar  # no management key: workers unknown
    assert not at.main.warning  # real weights: no warning

    stub["/predictions"] = (503, torchserve_error(503, "ServiceUnavailableException", "Model is busy"))
    upload(at, grace_hopper())
    assert "busy" in at.main.error[0].value

    stub["/predictions"] = (413, b"")  # TorchServe's own size limit answers without a body
    upload(at, ("huge.jpg", b"\xff\xd8" + b"\0" * 1000))
    assert "**huge.jpg** is too large" in at.main.error[0].value

    limit = "the image is 31457281 bytes (30.0 MiB); the limit is 31457280 bytes (30 MiB)"
    stub["/predictions"] = (413, torchserve_error(413, "ImageTooLarge", limit))
    upload(at, ("big.jpg", b"\xff\xd8" + b"\1" * 1000))
    assert f"**big.jpg** is too large for the server: {limit}." in at.main.error[0].value

    problem = "model.pt has sha256 1, but provenance.json records 2: refusing to serve it"
    stub["/predictions"] = (503, torchserve_error(503, "ArchiveIntegrityError", problem))
    upload(at, ("photo.jpg", b"\xff\xd8" + b"\2" * 1000))
    assert "refuses to serve its model" in at.main.error[0].value and "busy" not in at.main.error[0].value


def test_labels_sorted_and_percentages(stub):
    stub["/ping"] = (200, b'{"status": "Healthy"}')
    stub["/predictions"] = (200, GOOD)
    at = upload(run_app(), grace_hopper())
    assert [b.text for b in at.get("progress")] == [
        "1. **tabby** — 70.0%",
        "2. **tiger cat** — 20.0%",
        "3. **Egyptian cat** — 5.0%",
    ]


# --- several models: the picker ------------------------------------------------------------------

SHAPES = "shapes"
TRAINING = {
    "base_weights": "IMAGENET1K_V1",
    "dataset": {"folder": "my-shapes", "images": 120, "unreadable": 2, "fingerprint": "ab12"},
    "classes": {"circle": {"train": 24, "val": 6}, "square": {"train": 24, "val": 6}},
    "epochs": {"head": 10, "full": 4},
    "validation_accuracy": 0.975,
    "image_size": 64,
}


def described(name: str, classes: int, weights: str, training: dict | None) -> bytes:
    """GET /models/{name}?customized=true as TorchServe answers it, with the handler's describe() inside."""
    metadata = {"model": {"name": name, "weights": weights}, "serving": True, "classes": classes, "training": training}
    return json.dumps(
        [{"modelName": name, "maxWorkers": 1, "workers": [{"status": "READY"}], "customizedMetadata": metadata}]
    ).encode()


def answer(name: str, *labels: str) -> bytes:
    predictions = [{"label": label, "index": i, "probability": 0.9 / (i + 1)} for i, label in enumerate(labels)]
    return json.dumps({"predictions": predictions, "model": {"name": name, "weights": "w"}}).encode()


@pytest.fixture
def two_models(stub) -> dict[str, tuple[int, bytes]]:
    """The default model and a fine-tuned one, each answering with its own labels."""
    stub["/ping"] = (200, b'{"status": "Healthy"}')
    stub[f"/models/{MODEL}"] = (200, described(MODEL, 1000, "IMAGENET1K_V1", None))
    stub[f"/models/{SHAPES}"] = (200, described(SHAPES, 2, f"finetuned:{TRAINING['base_weights']}", TRAINING))
    stub["/models"] = (200, json.dumps({"models": [{"modelName": SHAPES}, {"modelName": MODEL}]}).encode())
    stub[f"/predictions/{MODEL}"] = (200, answer(MODEL, "tabby", "tiger cat"))
    stub[f"/predictions/{SHAPES}"] = (200, answer(SHAPES, "circle", "square"))
    return stub


def picker(at: AppTest):
    return [s for s in at.sidebar.selectbox if s.label == "Served models"]


def labels_shown(at: AppTest) -> list[str]:
    return [re.sub(r"^\d+\. \*\*(.+)\*\* — .*$", r"\1", b.text) for b in at.get("progress")]


@pytest.mark.server
def test_one_model_no_picker_and_its_classes_count(monkeypatch, torchserve, model_store):
    point_at(monkeypatch, torchserve.endpoints, torchserve.key_file)
    at = run_app()
    assert not picker(at)
    with zipfile.ZipFile(model_store / f"{MODEL}.mar") as z:
        classes = len(json.loads(z.read(LABELS_FILE)))
    assert f"**Classes:** {classes}" in "\n".join(m.value for m in at.sidebar.markdown)
    assert "Fine-tuned" not in rendered_text(at)


def test_two_models_picker_defaults_to_ts_model_and_switching_changes_the_answers(monkeypatch, two_models):
    monkeypatch.setenv("TS_MODEL", SHAPES)
    at = run_app()
    [select] = picker(at)
    assert select.options == [
        f"{MODEL} — 1000 classes, IMAGENET1K_V1",
        f"{SHAPES} — 2 classes, fine-tuned",
    ]
    assert select.value == SHAPES
    card = "\n".join(m.value for m in at.sidebar.markdown)
    for fact in ("**Classes:** 2", "**Fine-tuned from:** `IMAGENET1K_V1`", "120 images in `my-shapes`, 2 unreadable",
                 "circle 24+6, square 24+6", "**Epochs:** head 10, full 4", "**Validation accuracy:** 97.5%"):
        assert fact in card, (fact, card)
    upload(at, grace_hopper())
    assert labels_shown(at) == ["circle", "square"]

    select.set_value(MODEL).run()
    assert not at.exception, at.exception
    assert labels_shown(at) == ["tabby", "tiger cat"]  # the same photo, answered by the other model
    card = "\n".join(m.value for m in at.sidebar.markdown)
    assert "**Classes:** 1000" in card and "Fine-tuned" not in card

    monkeypatch.delenv("TS_MODEL")  # without TS_MODEL the default is the project's model
    st.cache_data.clear()
    assert picker(run_app())[0].value == MODEL


def test_model_description_failure_is_a_friendly_message(monkeypatch, two_models):
    two_models[f"/models/{SHAPES}"] = (500, torchserve_error(500, "InternalServerError", "worker died"))
    monkeypatch.setenv("TS_MODEL", SHAPES)
    at = run_app()
    [select] = picker(at)
    assert f"{SHAPES} — description unavailable" in select.options and select.value == SHAPES
    warning = at.sidebar.warning[0].value
    assert f"Could not read what `{SHAPES}` is" in warning and "(500)" in warning
    upload(at, grace_hopper())  # its answers still come from it
    assert labels_shown(at) == ["circle", "square"] and "Traceback" not in rendered_text(at)


# --- plain logic ---------------------------------------------------------------------------------


def test_percent():
    assert percent(0.7) == "70.0%" and percent(1.0) == "100.0%" and percent(0.0001) == "<0.1%" and percent(0) == "0.0%"


def test_settings_default_to_make_run(monkeypatch):
    for name in ("TS_INFERENCE_URL", "TS_MANAGEMENT_URL", "TS_KEY_FILE", "TS_MODEL", "TS_INFERENCE_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.endpoints == Endpoints() and settings.model == MODEL
    assert settings.key_file == DEFAULT_KEY_FILE == ROOT / "var" / "key_file.json"
    only_key = Settings.from_env({"TS_INFERENCE_KEY": "abc", "TS_MODEL": "other"})
    assert only_key.client().keys["inference"] == "abc" and only_key.model == "other"


@pytest.fixture(scope="module")
def short_lived_keys(model_store, tmp_path_factory) -> Iterator[TorchServe]:
    """A server of its own whose keys expire after 3 s instead of 60 min (renewing them would
    revoke the keys other tests hold for the session server)."""
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("short-keys"), model_store,
                                  token_expiration_min="0.05") as server:
        yield server


def wait_until_refused(server: TorchServe, key: str) -> None:
    """An explicit wait for the expiry itself: poll until the server refuses the key."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ping = requests.get(f"{server.endpoints.inference}/ping", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        if ping.status_code == 400:
            return
        time.sleep(0.5)
    pytest.fail("the inference key never expired")


@pytest.mark.server
def test_client_renews_an_expired_inference_key(short_lived_keys):
    """Keys expire: the client asks for a new one with the API key (TorchServe rewrites the key file)."""
    settings = Settings(short_lived_keys.endpoints, key_file=short_lived_keys.key_file)
    client = settings.client()
    old_key = client.keys["inference"]
    wait_until_refused(short_lived_keys, old_key)
    outcome = classify(client, settings, grace_hopper().read_bytes(), "grace_hopper.jpg", topk=DEFAULTS.topk)
    assert outcome.ok, outcome.error
    assert len(outcome.predictions) == DEFAULTS.topk
    assert read_keys(short_lived_keys.key_file)["inference"] != old_key
    assert server_state(client, settings).problem is None


@pytest.mark.server
def test_page_keeps_working_past_key_expiry(monkeypatch, short_lived_keys):
    point_at(monkeypatch, short_lived_keys.endpoints, short_lived_keys.key_file)
    at = upload(run_app(), grace_hopper())
    assert len(at.get("progress")) == DEFAULTS.topk
    wait_until_refused(short_lived_keys, read_keys(short_lived_keys.key_file)["inference"])
    upload(at, photos()["coffee"])
    assert len(at.get("progress")) == DEFAULTS.topk and not at.main.error


DEV_ONLY = ("matplotlib", "skimage", "pytest", "flask", "playwright")


def test_runtime_imports_no_dev_only_package():
    """`make run` (scripts/serve.py), the page and the client need requirements.txt alone: importing
    them in a fresh interpreter loads none of requirements-dev.txt's packages."""
    code = (
        "import runpy, sys; sys.path.insert(0, '.');"
        "import service.client.api, service.local.torchserve, service.local.ui_launch, ui.logic;"
        "runpy.run_path('scripts/serve.py'); runpy.run_path('scripts/manage.py');"
        f"print(sorted(m for m in {DEV_ONLY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
