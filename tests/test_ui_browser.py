"""End to end: the real Streamlit page in headless Chromium against a real TorchServe.

Chromium is Debian's (`make test-deps` installs it); Playwright only drives it. Each state is
saved as a screenshot under test-output/ui/. UPDATE_DOCS_SCREENSHOT=1 also writes docs/ui.png,
the README's picture of the page.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml
from playwright.sync_api import Browser, expect, sync_playwright

from handler.settings import DEFAULTS
from scripts import finetune
from service.client.api import read_keys
from service.finetune.demo import make_demo_data
from service.local.torchserve import TorchServe, free_port
from service.local.ui_launch import start_ui
from service.names import MODEL_CONFIG
from service.photos import grace_hopper, photos
from service.processes import stop_group
from tests.conftest import MODEL, ROOT

pytestmark = [pytest.mark.server, pytest.mark.browser]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 1000}
WAIT_MS = 60_000
PERCENT = re.compile(r"— (\d+\.\d%|<0\.1%)$")


@pytest.fixture(scope="module")
def screenshots(output_dir: Path) -> Path:
    path = output_dir / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui") / "feedback"


@pytest.fixture(scope="module")
def ui_server(model_store, tmp_path_factory) -> Iterator[TorchServe]:
    """A TorchServe of this module's own: the explanation share the Why? test needs is not spent by
    whatever ran before it."""
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("ui-run"), model_store) as server:
        yield server


@pytest.fixture(scope="module")
def ui_url(ui_server, screenshots: Path, feedback_dir: Path) -> Iterator[str]:
    """The real page (`streamlit run ui/app.py`, as `make run` starts it) on a free port, storing
    corrections in a feedback folder of its own (TS_FEEDBACK_DIR)."""
    with running_ui(ui_server, screenshots / "streamlit.log", TS_FEEDBACK_DIR=str(feedback_dir)) as url:
        yield url


@contextmanager
def running_ui(server: TorchServe, log_file: Path, **env: str) -> Iterator[str]:
    """The page as a client of `server` on a free port, with these variables set for it alone; its URL
    once Streamlit answers its health check."""
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        ui = start_ui(server, port=port, log_file=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/_stcore/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if ui.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Streamlit did not start; see {log_file}")
            time.sleep(0.2)
        yield url
    finally:
        stop_group(ui.pid, 10)


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright; `extra_args` after the usual ones (the batch
    tests add a fake camera)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-deps` (apt-get install chromium)")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, ui_url: str):
    """A fresh browser session on the page, once the server state has loaded in the sidebar."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(ui_url)
    page.get_by_role("heading", name="Image classifier").wait_for()
    page.get_by_text("TorchServe is reachable").wait_for()
    page.locator('input[type="file"]').wait_for(state="attached")
    yield page
    context.close()


def drop(page, *files: Path) -> None:
    page.locator('input[type="file"]').set_input_files([str(f) for f in files])


def wait_done(page, count: int) -> None:
    """The page shows 'N of M classified.' once photos are there: wait for it, then for the run to end."""
    page.get_by_text(re.compile(rf"\d+ of {count} classified\.")).wait_for()
    wait_idle(page)


def wait_idle(page) -> None:
    """Until the script run is over: during a rerun the last run's elements stay drawn (stale) beside the new
    ones, so a form whose place moved (a card with "Why?" on has a third column) is there twice for a moment.
    Call it once something of the new run is seen, or it may return before the run starts."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()


def shoot(page, path: Path) -> None:
    """Streamlit scrolls inside its own container, so grow the window to the content first."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height) + 40)})
    page.screenshot(path=str(path), full_page=True)


def assert_no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.content()


def test_photo_gets_default_topk_labels_with_percentages(page, ui_server, screenshots):
    shoot(page, screenshots / "empty.png")
    drop(page, grace_hopper())
    wait_done(page, 1)
    bars = page.locator('[data-testid="stProgress"]')
    expect(bars).to_have_count(DEFAULTS.topk)
    texts = [t.strip() for t in bars.all_inner_texts()]
    assert all(PERCENT.search(t) for t in texts), texts
    values = [float(PERCENT.search(t).group(1).rstrip("%").lstrip("<")) for t in texts]
    assert values == sorted(values, reverse=True)
    assert page.get_by_text("grace_hopper.jpg").count() >= 1
    assert page.get_by_text("This model has random weights", exact=True).is_visible()
    assert page.get_by_text(re.compile(r"Workers: \d+ ready")).is_visible()
    assert page.get_by_role("button", name="Deploy").count() == 0
    html = page.content()
    for name, key in read_keys(ui_server.key_file).items():
        assert key not in html, f"the {name} key reached the browser"
    assert_no_traceback(page)
    shoot(page, screenshots / "photo.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(screenshots / "photo.png", ROOT / "docs" / "ui.png")


def test_text_file_named_jpg_shows_friendly_error(page, tmp_path, screenshots):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("Dear diary, this is not a photo.\n")
    drop(page, fake)
    wait_done(page, 1)
    error = page.locator('[data-testid="stAlertContentError"]')
    error.filter(has_text="holiday.jpg is not an image").wait_for()
    assert page.locator('[data-testid="stProgress"]').count() == 0
    assert_no_traceback(page)
    shoot(page, screenshots / "not-an-image.png")


def test_two_photos_two_result_blocks(page, screenshots):
    drop(page, grace_hopper(), photos()["chelsea"])
    wait_done(page, 2)
    assert page.get_by_text("2 of 2 classified.").is_visible()
    # st.image's component is a lazily loaded script chunk: the caption can be on the page first
    cards = page.locator('[data-testid="stImage"]:not([data-testid="stExpander"] *) img')  # not the review's photo
    expect(cards).to_have_count(2)
    assert all(cards.evaluate_all("imgs => imgs.map(i => i.complete)"))
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(2 * DEFAULTS.topk)
    assert_no_traceback(page)
    shoot(page, screenshots / "two-photos.png")


def test_bad_file_among_good_ones(page, tmp_path, screenshots):
    fake = tmp_path / "notes.jpg"
    fake.write_bytes(b"not an image at all")
    drop(page, grace_hopper(), fake, photos()["coffee"])
    wait_done(page, 3)
    assert page.get_by_text("2 of 3 classified.").is_visible()
    expect(page.locator('[data-testid="stAlertContentError"]').filter(has_text="notes.jpg")).to_have_count(1)
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(2 * DEFAULTS.topk)
    assert_no_traceback(page)
    shoot(page, screenshots / "mixed.png")


def test_why_shows_an_overlay_and_corrections_land_in_the_feedback_folder(page, feedback_dir, screenshots):
    """The "Why?" toggle shows the explanation's overlay beside the photo; "Is this right?" stores a
    picked label in its folder (ImageFolder layout, one JSON line), and a hostile label is refused."""
    drop(page, grace_hopper())
    wait_done(page, 1)
    why = page.get_by_text("Why?", exact=True)
    why.click()
    overlay = page.locator('[data-testid="stImage"]').filter(has_text="Why “")
    expect(overlay.locator("img")).to_have_count(1)
    expect(page.get_by_text("sensitivity, not certainty", exact=False)).to_be_visible()
    assert overlay.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    wait_idle(page)  # the form moved to the third column: until the run ends, the old one is drawn too
    page.get_by_text("Is this right?").click()
    page.get_by_role("button", name=re.compile(r"^Yes, it is ")).wait_for()

    save = page.get_by_role("button", name="Save the right label")
    page.get_by_label("…or a class the model does not know").fill("../../escaped")
    page.get_by_label("…or a class the model does not know").press("Enter")
    expect(save).to_be_enabled()  # the rerun that reads the typed label has finished
    save.click()
    expect(page.get_by_text("may not contain /", exact=False)).to_be_visible()
    assert not (feedback_dir.parent.parent / "escaped").exists() and not list(feedback_dir.rglob("*.jpg"))

    page.get_by_label("…or a class the model does not know").fill("")
    page.get_by_label("…or a class the model does not know").press("Enter")
    expect(save).to_be_disabled()  # the rerun that reads the emptied label has drawn the button
    wait_idle(page)
    picker = page.get_by_label("No, it is…")
    picker.click()
    page.keyboard.type("tiger ca")
    page.get_by_role("option", name="tiger cat", exact=True).click()
    expect(save).to_be_enabled()
    save.click()
    expect(page.get_by_text("Saved as tiger cat", exact=False)).to_be_visible()
    stored = list((feedback_dir / "tiger cat").glob("*.jpg"))
    assert [p.read_bytes() for p in stored] == [grace_hopper().read_bytes()]
    [line] = (feedback_dir / "corrections.jsonl").read_text().splitlines()
    assert '"label": "tiger cat"' in line
    assert_no_traceback(page)
    shoot(page, screenshots / "why.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(screenshots / "why.png", ROOT / "docs" / "ui-why.png")


# --- two models served: the picker ---------------------------------------------------------------

FINE_TUNED = "shapes"
SHAPES = {"circle": "circle", "square": "square"}  # fewer classes than the default top-k
PER_CLASS = 8


@pytest.fixture(scope="module")
def two_models_url(model_store: Path, tmp_path_factory, screenshots: Path) -> Iterator[str]:
    """A server of its own serving the default model and a model fine-tuned in seconds (generated shapes,
    two head epochs), and the page as its client with TS_MODEL naming the fine-tuned one."""
    root = tmp_path_factory.mktemp("two-models")
    store = root / "store"
    store.mkdir()
    shutil.copyfile(model_store / f"{MODEL}.mar", store / f"{MODEL}.mar")
    data = make_demo_data(root / "data", SHAPES, per_class=PER_CLASS, size=32, seed=1)
    config = {**yaml.safe_load(MODEL_CONFIG.read_text()), "minWorkers": 1, "maxWorkers": 1}
    (root / "model-config.yaml").write_text(yaml.safe_dump(config))
    argv = [str(data), "--model-name", FINE_TUNED, "--random-weights", "--image-size", "32", "--epochs", "2"]
    assert finetune.main(argv + ["--export-path", str(store), "--model-config", str(root / "model-config.yaml")]) == 0
    with TorchServe.on_free_ports(root / "run", store) as server:
        with running_ui(server, screenshots / "streamlit-models.log", TS_MODEL=FINE_TUNED) as url:
            yield url


def shown_labels(page) -> list[str]:
    texts = page.locator('[data-testid="stProgress"]').all_inner_texts()
    return [re.match(r"\d+\. (.+) — ", t.strip()).group(1) for t in texts]


def test_model_picker_switches_the_answering_model(browser, two_models_url, screenshots):
    """TS_MODEL picks the default; the sidebar shows the fine-tuned model's provenance; picking the other
    model answers the same photo with that model's labels."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    page.goto(two_models_url)
    page.get_by_text("TorchServe is reachable").wait_for()
    picker = page.get_by_role("combobox", name="Served models")
    expect(picker).to_have_value(f"{FINE_TUNED} — {len(SHAPES)} classes, fine-tuned")  # TS_MODEL's
    images = f"{PER_CLASS * len(SHAPES)} images"
    for fact in ("Fine-tuned from:", "Dataset:", images, "Epochs:", "head 2", "Validation accuracy:"):
        expect(page.get_by_text(fact, exact=False).first).to_be_visible()

    drop(page, grace_hopper())
    wait_done(page, 1)
    bars = page.locator('[data-testid="stProgress"]')
    assert len(SHAPES) < DEFAULTS.topk
    expect(bars).to_have_count(len(SHAPES))  # the top-k sent is capped at the model's classes count
    assert set(shown_labels(page)) == set(SHAPES)
    assert_no_traceback(page)
    shoot(page, screenshots / "models-fine-tuned.png")

    picker.click()
    page.get_by_role("option", name=re.compile(rf"^{MODEL} — ")).click()
    expect(page.get_by_text("Fine-tuned from:")).to_have_count(0)
    expect(bars.filter(has_text=re.compile("|".join(SHAPES)))).to_have_count(0)  # the other model's answer
    expect(bars).to_have_count(DEFAULTS.topk)
    wait_done(page, 1)
    labels = shown_labels(page)
    assert len(labels) == DEFAULTS.topk and not set(labels) & set(SHAPES), labels
    assert_no_traceback(page)
    shoot(page, screenshots / "models-default.png")
    page.close()
