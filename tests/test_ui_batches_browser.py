"""The batch page end to end: the real Streamlit page in headless Chromium against a real TorchServe.

A folder of 120 generated photos (JPEG, PNG, WebP, in subfolders, and a text file) through the directory
picker; the camera through Chromium's fake device; the uncertain filter, row selection and the review of
uncertain photos. UPDATE_DOCS_SCREENSHOT=1 also writes docs/ui-table.png, the README's picture of the table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from handler.settings import DEFAULTS
from service.client.api import Settings
from service.local.torchserve import TorchServe
from tests.batch_photos import make_photo_folder
from tests.conftest import MODEL, ROOT
from tests.test_ui_browser import VIEWPORT, WAIT_MS, assert_no_traceback, chromium, running_ui, shoot, wait_idle
from ui.logic import classify
from ui.sources import natural_key

pytestmark = [pytest.mark.server, pytest.mark.browser]

FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
ROW_PX = 35  # st.dataframe's row and header height


@pytest.fixture(scope="module")
def screenshots(output_dir: Path) -> Path:
    path = output_dir / "ui-batches"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-batches") / "feedback"


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory) -> Iterator[TorchServe]:
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("ui-batches-run"), model_store) as served:
        yield served


@pytest.fixture(scope="module")
def url(server, screenshots: Path, feedback_dir: Path) -> Iterator[str]:
    with running_ui(server, screenshots / "streamlit.log", TS_FEEDBACK_DIR=str(feedback_dir)) as address:
        yield address


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(*FAKE_CAMERA) as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, url: str) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, permissions=["camera"], accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    opened.goto(url)
    opened.get_by_text("TorchServe is reachable").wait_for()
    yield opened
    context.close()


def folder_of(tmp_path: Path, count: int) -> Path:
    """`count` photos in three formats and subfolders, plus a file that is not a photo."""
    folder = tmp_path / "holiday"
    make_photo_folder(folder, count)
    (folder / "day 1" / "notes.txt").write_text("Ferry at 9, lunch by the harbour.\n", encoding="utf-8")
    return folder


def upload_folder(page: Page, folder: Path) -> None:
    page.get_by_text("A folder", exact=True).click()
    picker = page.locator("input[type=file][webkitdirectory]")
    picker.wait_for(state="attached")
    picker.set_input_files(str(folder))


def wait_done(page: Page, count: int) -> None:
    page.get_by_text(re.compile(rf"^{count} of {count} classified\.$")).wait_for()


def table(page: Page):
    return page.locator('[data-testid="stDataFrame"]')


def table_rows(page: Page) -> int:
    """Rows of the table (its accessible grid counts the header row too)."""
    grid = table(page).locator("table[role=grid]")
    return int(grid.get_attribute("aria-rowcount")) - 1


def select_row(page: Page, row: int) -> None:
    """Tick the row's selection box (the grid is a canvas: click where the box is drawn)."""
    canvas = table(page).locator("canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + ROW_PX * (row + 1) + ROW_PX / 2)


def download(page: Page, button: str) -> bytes:
    with page.expect_download() as started:
        page.get_by_role("button", name=button).click()
    return Path(started.value.path()).read_bytes()


def api_answers(server: TorchServe, folder: Path, names: list[str]) -> dict[str, dict]:
    """The API's own top-1 for the bytes of each file, sent one per request."""
    settings = Settings(server.endpoints, model=MODEL, key_file=server.key_file)
    client = settings.client()
    answers = {}
    for name in names:
        data = (folder.parent / name).read_bytes()
        outcome = classify(client, settings, data, name, DEFAULTS.topk)
        assert outcome.ok, outcome.error
        answers[name] = {"sha256": hashlib.sha256(data).hexdigest(), **outcome.predictions[0]}
    return answers


def test_a_folder_of_120_photos_makes_a_table_and_a_csv_of_the_apis_answers(page, server, tmp_path, screenshots):
    folder = folder_of(tmp_path, 120)
    upload_folder(page, folder)
    expect(page.get_by_text(re.compile(r"^Classifying… \d+/120 photos done · [\d.]+ photos/s$"))).to_be_visible()
    wait_done(page, 120)
    expect(page.get_by_text("1 files skipped: not images")).to_be_visible()
    assert table_rows(page) == 120
    assert page.locator('[data-testid="stProgress"]').count() == 0  # the batch's bar is gone, no card is drawn
    expect(page.get_by_text("Select rows in the table to see their photos", exact=False)).to_be_visible()
    assert_no_traceback(page)
    page.get_by_text("120 of 120 classified.").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(screenshots / "table.png"))
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(screenshots / "table.png", ROOT / "docs" / "ui-table.png")

    lines = list(csv.DictReader(io.StringIO(download(page, "Download CSV").decode("utf-8"))))
    names = [line["file"] for line in lines]
    on_disk = sorted(p.relative_to(folder.parent).as_posix() for p in folder.rglob("photo *"))
    assert len(on_disk) == 120  # one row per photo in path order, folder paths kept, notes.txt left out
    assert names == sorted(on_disk, key=natural_key) and names[0] == "holiday/day 1/photo 001.png"
    answers = api_answers(server, folder, names)
    for line in lines:
        expected = answers[line["file"]]
        assert line["label_1"] == expected["label"], line["file"]
        assert abs(float(line["probability_1"]) - expected["probability"]) < 1e-4, line["file"]
        assert line["sha256"] == expected["sha256"] and line["model"] == MODEL and not line["error"]
    exported = download(page, "Download JSON").decode("utf-8")
    assert exported.count('"sha256"') == 120


def test_the_camera_picture_is_classified(page, screenshots):
    page.get_by_text("Camera", exact=True).click()
    video = page.locator("video")
    video.wait_for()
    page.wait_for_function("() => document.querySelector('video')?.videoHeight > 0")
    width, height = video.evaluate("v => [v.videoWidth, v.videoHeight]")
    assert min(width, height) >= 720, (width, height)  # asked for 720p: far above the model's 224 px crop
    page.get_by_role("button", name="Take Photo").click()
    wait_done(page, 1)
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(DEFAULTS.topk)
    expect(page.get_by_text(re.compile(r"^camera-[0-9a-f]{8}\.jpg$")).first).to_be_visible()
    assert_no_traceback(page)
    shoot(page, screenshots / "camera.png")


def set_threshold(page: Page, percent: int) -> None:
    """The slider, by keyboard: Home (0%), then one step (1%) per arrow press."""
    slider = page.locator('input[type=range][aria-label^="Uncertain below"]')
    slider.focus()
    slider.press("Home")
    for _ in range(percent):
        slider.press("ArrowRight")
    expect(page.get_by_text(re.compile(rf"uncertain \(below {percent}%\)"))).to_be_visible()


def test_uncertain_filter_selection_and_review_into_the_feedback_folder(
    page, server, tmp_path, feedback_dir, screenshots
):
    folder = folder_of(tmp_path, 24)
    upload_folder(page, folder)
    wait_done(page, 24)
    lines = list(csv.DictReader(io.StringIO(download(page, "Download CSV").decode("utf-8"))))
    tops = sorted(float(line["probability_1"]) for line in lines)
    threshold = next(p for p in range(1, 100) if sum(t < p / 100 for t in tops) >= 3)  # some, not all, uncertain
    uncertain = [line["file"] for line in lines if float(line["probability_1"]) < threshold / 100]
    assert 0 < len(uncertain) < 24
    set_threshold(page, threshold)

    page.get_by_text("Show only the uncertain ones").click()
    expect(page.get_by_text(f"{len(uncertain)} uncertain", exact=False).first).to_be_visible()
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=stDataFrame] table[role=grid]')"
        f"?.getAttribute('aria-rowcount') == '{len(uncertain) + 1}'"
    )
    cards = page.locator('[data-testid="stImage"]:not([data-testid="stExpander"] *)')  # not the review's photo
    expect(cards).to_have_count(len(uncertain))  # few enough: every uncertain photo's card
    captions = sorted(cards.all_inner_texts())
    assert [c.strip() for c in captions] == sorted(uncertain)

    page.get_by_text("Show only the uncertain ones").click()  # all 24 rows again: too many cards to draw
    expect(cards).to_have_count(0)
    select_row(page, 1)
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text(lines[1]["file"])
    select_row(page, 4)
    expect(cards).to_have_count(2)
    assert [c.strip() for c in cards.all_inner_texts()] == [lines[1]["file"], lines[4]["file"]]
    assert_no_traceback(page)
    shoot(page, screenshots / "selected.png")

    review = page.locator('[data-testid="stExpander"]').filter(has_text="uncertain photos one by one")
    review.get_by_text(f"Review the {len(uncertain)} uncertain photos one by one").click()
    expect(review.get_by_text(f"Photo 1 of {len(uncertain)}: {uncertain[0]}")).to_be_visible()
    review.get_by_role("button", name="Skip").click()
    expect(review.get_by_text(f"Photo 2 of {len(uncertain)}: {uncertain[1]}")).to_be_visible()
    wait_idle(page)
    expect(review.get_by_label("No, it is…")).to_have_count(1)  # photo 1's form is gone, not just hidden
    review.get_by_label("No, it is…").click()
    page.keyboard.type("tiger ca")
    page.get_by_role("option", name="tiger cat", exact=True).click()
    save = review.get_by_role("button", name="Save and next")
    expect(save).to_be_enabled()
    save.click()
    expect(review.get_by_text(f"{uncertain[1]}: Saved as tiger cat", exact=False)).to_be_visible()
    stored = list((feedback_dir / "tiger cat").glob("*"))
    assert [p.read_bytes() for p in stored] == [(folder.parent / uncertain[1]).read_bytes()]
    if len(uncertain) > 2:
        expect(review.get_by_text(f"Photo 3 of {len(uncertain)}: {uncertain[2]}")).to_be_visible()
    assert '"label": "tiger cat"' in (feedback_dir / "corrections.jsonl").read_text(encoding="utf-8")
    assert_no_traceback(page)
    shoot(page, screenshots / "review.png")
