"""Versions in the UI, in headless Chromium against a TorchServe of its own serving two versions of one model:
the model picker shows both and the default, an answer names its version, and the operator page's promote
and roll back buttons change the default the management API reports.

Two random-weights archives (answers mean nothing; the buttons do not depend on the gate's verdict);
v2 is deployed beside v1 through service/versions, so the operator page has gate figures to show.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
import yaml
from playwright.sync_api import expect

from service.finetune.demo import make_demo_data
from service.local.torchserve import TorchServe
from service.names import MODEL_CONFIG
from service.processes import stop_group
from service.versions.operations import deploy
from tests.test_ui_browser import VIEWPORT, WAIT_MS, browser, screenshots, shoot  # noqa: F401 (fixtures)
from tests.test_ui_operator import start_page
from tests.test_versions import random_version_archive

pytestmark = [pytest.mark.server, pytest.mark.browser]

MODEL = "shapes"
LABELS = ["circle", "square"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[TorchServe]:
    root = tmp_path_factory.mktemp("ui-versions")
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    config.update({"minWorkers": 1, "maxWorkers": 1})
    (root / "model-config.yaml").write_text(yaml.safe_dump(config))
    (root / "labels.json").write_text(json.dumps(LABELS))
    for version in ("1", "2"):
        random_version_archive(root / "labels.json", version, root / f"v{version}", root / "model-config.yaml")
    store = root / "store"
    store.mkdir()
    shutil.copy(root / "v1" / f"{MODEL}.mar", store / f"{MODEL}-v1.mar")
    labelled = make_demo_data(root / "eval", {name: name for name in LABELS}, per_class=4, size=48, seed=5)
    with TorchServe.on_free_ports(root / "run", store) as s:
        deploy(s.client(), s.run_dir, store, root / "v2" / f"{MODEL}.mar", labelled)
        yield s


def default_version(server: TorchServe) -> str:
    return str(server.client().describe_model(MODEL).json()[0]["modelVersion"])


@pytest.fixture
def open_page(browser, server, screenshots, monkeypatch):  # noqa: F811 (fixtures imported above)
    """The UI with the operator page, TS_MODEL naming the versioned model; pages opened at `path`."""
    monkeypatch.setenv("TS_MODEL", MODEL)
    started = []

    def open_page(path: str = ""):
        url, ui = start_page(server, True, screenshots / "streamlit-versions.log")
        context = browser.new_context(viewport=VIEWPORT)
        started.append((ui, context))
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{url}/{path}")
        return page

    yield open_page
    for ui, context in started:
        context.close()
        stop_group(ui.pid, 10)


def test_picker_shows_both_versions_and_the_default_and_answers_name_theirs(open_page, server, screenshots):  # noqa: F811
    page = open_page()
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar).to_contain_text("Versions:", timeout=WAIT_MS)
    expect(sidebar).to_contain_text("1 (default) · 2")
    photo = sorted((server.run_dir.parent / "eval" / "circle").iterdir())[0]
    page.locator('input[type="file"]').set_input_files([str(photo)])
    expect(page.get_by_text(f"Answered by {MODEL} version 1")).to_be_visible()
    shoot(page, screenshots / "versions-picker.png")


def test_operator_promote_and_roll_back_change_the_default(open_page, server, screenshots):  # noqa: F811
    assert default_version(server) == "1"
    page = open_page("operator")
    page.get_by_role("heading", name="Versions").wait_for()
    table = page.locator('[data-testid="stDataFrame"]').filter(has_text="gate accuracy")  # by content, not position
    expect(table).to_contain_text("default")
    gate = json.loads((server.run_dir / "versions.json").read_text())[MODEL]["versions"]["2"]["gate"]
    expect(table).to_contain_text("passed" if gate["passed"] else "refused")  # v2's verdict, from the record
    expect(table).to_contain_text(f"{100 * gate['candidate']['accuracy']:.1f} %")
    page.get_by_role("button", name="Promote").click()
    expect(page.get_by_text(f"Done: {MODEL} version 2 is the default")).to_be_visible()
    assert default_version(server) == "2"
    shoot(page, screenshots / "versions-operator.png")
    page.get_by_role("button", name="Roll back to the previous default").click()
    expect(page.get_by_text(f"Done: {MODEL} version 1 is the default again")).to_be_visible()
    assert default_version(server) == "1"
