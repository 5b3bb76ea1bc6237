"""The operator page in headless Chromium against a TorchServe of its own (scaling changes its
workers, so not the session server): it lists the workers as the management API does, its scale
control changes their number, and without the operator setting the page does not exist.

UPDATE_DOCS_SCREENSHOT=1 also writes docs/operator.png, the picture of the page in docs/MONITORING.md.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from service.local.torchserve import TorchServe, free_port
from service.local.ui_launch import start_ui
from service.names import DEFAULT_MODEL as MODEL
from service.photos import photos
from service.processes import stop_group
from tests.conftest import ROOT
from tests.test_ui_browser import VIEWPORT, WAIT_MS, browser, screenshots, shoot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.server, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory) -> Iterator[TorchServe]:
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("operator-ts"), model_store) as server:
        client = server.client()
        for path in list(photos().values())[:3]:  # some traffic for the charts
            assert client.predict(MODEL, path.read_bytes(), filename=path.name).ok
        assert client.predict(MODEL, b"no image", filename="x").status_code == 415
        yield server


def start_page(server: TorchServe, operator: bool, log: Path) -> tuple[str, object]:
    port = free_port()
    ui = start_ui(server, port=port, log_file=log, operator=operator)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/_stcore/health", timeout=2).ok:
                return url, ui
        except requests.ConnectionError:
            pass
        if ui.poll() is not None or time.monotonic() > deadline:
            stop_group(ui.pid, 10)
            pytest.fail(f"Streamlit did not start; see {log}")
        time.sleep(0.2)


@pytest.fixture
def open_page(browser, server, screenshots):  # noqa: F811 (fixtures imported above)
    started = []

    def open_page(operator: bool, path: str = ""):
        url, ui = start_page(server, operator, screenshots / f"streamlit-operator-{operator}.log")
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


def workers(server: TorchServe) -> list[dict]:
    return server.client().describe_model(MODEL).json()[0]["workers"]


def test_operator_page_shows_workers_and_scales_them(open_page, server, screenshots):  # noqa: F811
    page = open_page(operator=True, path="operator")
    page.get_by_role("heading", name="Operator").wait_for()
    (worker,) = workers(server)
    table = page.locator('[data-testid="stDataFrame"]').first
    expect(table).to_contain_text(str(worker["pid"]))
    expect(table).to_contain_text("READY")
    expect(page.get_by_text("Forward pass per image")).to_be_visible()  # two metrics readings: charts
    client, photo = server.client(), photos()["coffee"].read_bytes()
    for _ in range(12):  # traffic while the page reads the metrics: the charts have something to draw
        assert client.predict(MODEL, photo, filename="coffee.png").ok
        time.sleep(0.3)
    page.get_by_label("Workers for this model").fill("2")
    page.get_by_role("button", name="Scale workers").click()
    page.get_by_text("Scaled:").wait_for()
    assert [w["status"] for w in workers(server)] == ["READY", "READY"]
    pids = [str(w["pid"]) for w in workers(server)]
    for pid in pids:
        expect(table).to_contain_text(pid)
    shoot(page, screenshots / "operator.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copy(screenshots / "operator.png", ROOT / "docs" / "operator.png")
    page.get_by_label("Workers for this model").fill("1")
    page.get_by_role("button", name="Scale workers").click()
    page.get_by_text("Scaled:").wait_for()
    assert len(workers(server)) == 1


def test_operator_page_is_absent_without_the_setting(open_page):
    page = open_page(operator=False, path="operator")
    page.get_by_role("heading", name="Image classifier").wait_for()  # the classification page only
    expect(page.get_by_role("heading", name="Operator")).to_have_count(0)
    expect(page.get_by_role("button", name="Scale workers")).to_have_count(0)
    expect(page.get_by_text("Operator", exact=True)).to_have_count(0)  # no navigation entry
