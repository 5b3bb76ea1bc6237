"""The page's batch client (ui/batch.py) against a real TorchServe: photos sent several to a request
get the answers each gets alone, a bad photo its own error, more photos than the server takes per
request are still answered, and a dropped connection or a busy answer is retried.

`-k timing` (or UI_BATCH_TIMING=1) also runs the timing comparison behind the default PER_REQUEST:
120 photos, one per request against several per request, interleaved; it prints its figures and
asserts only that both answer every photo (a benchmark, not a test of speed).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from handler.settings import DEFAULTS
from service.client.api import Endpoints, Settings
from service.local.torchserve import TorchServe
from tests.batch_photos import make_photo_folder
from tests.conftest import MODEL, SERVED, build_test_archive
from ui.batch import PARALLEL, PER_REQUEST, classify_many, send
from ui.logic import Outcome, classify

pytestmark = pytest.mark.server

BROKEN = b"this is a text file, not a photo"


@pytest.fixture(scope="module")
def folder_photos(tmp_path_factory) -> list[tuple[str, bytes]]:
    folder = tmp_path_factory.mktemp("batch-photos")
    return [(path.relative_to(folder).as_posix(), path.read_bytes()) for path in make_photo_folder(folder, 40)]


@pytest.fixture(scope="module")
def settings(torchserve) -> Settings:
    return Settings(torchserve.endpoints, model=MODEL, key_file=torchserve.key_file)


def alone(settings: Settings, photos: list[tuple[str, bytes]]) -> list[Outcome]:
    client = settings.client()
    return [classify(client, settings, data, name, DEFAULTS.topk) for name, data in photos]


def in_order(found: Iterator[tuple[int, Outcome]], count: int) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * count
    for index, outcome in found:
        assert outcomes[index] is None, f"photo {index} answered twice"
        outcomes[index] = outcome
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


def same_answer(a: Outcome, b: Outcome) -> bool:
    """Same labels in the same order, probabilities equal up to float noise (another batch, another sum order)."""
    return [p["label"] for p in a.predictions] == [p["label"] for p in b.predictions] and all(
        abs(p["probability"] - q["probability"]) < 1e-4 for p, q in zip(a.predictions, b.predictions, strict=True)
    )


def test_batches_answer_like_one_photo_per_request_and_a_bad_photo_alone_fails(settings, folder_photos):
    photos = folder_photos[:20] + [("notes.jpg", BROKEN)] + folder_photos[20:]
    progress = []
    found = in_order(
        classify_many(settings.client(), settings, photos, DEFAULTS.topk, per_request=8, progress=progress.append),
        len(photos),
    )
    expected = alone(settings, photos)
    assert [o.filename for o in found] == [name for name, _ in photos]
    bad = found.pop(20)
    assert "**notes.jpg** is not an image" in bad.error and not bad.retry and not bad.predictions
    assert "**notes.jpg** is not an image" in expected.pop(20).error
    assert all(o.ok and len(o.predictions) == DEFAULTS.topk for o in found)
    mismatched = [o.filename for o, e in zip(found, expected, strict=True) if not same_answer(o, e)]
    assert not mismatched, mismatched
    assert found[0].model["name"] == MODEL and found[0].model.get("runtime")
    dones = [p.done for p in progress]
    assert dones == sorted(dones) and len(dones) == 1 + -(-len(photos) // 8)  # once at the start, once a request
    assert progress[0].done == 0 and progress[-1].done == progress[-1].total == len(photos)


def test_more_photos_than_a_request_may_carry_are_answered_one_by_one(settings, folder_photos):
    """A request over the server's cap is refused as a whole (413): each photo is then sent alone."""
    over = SERVED.max_images_per_request + 1
    photos = (folder_photos * 2)[:over]
    found = in_order(classify_many(settings.client(), settings, photos, 1, per_request=over), over)
    assert all(o.ok and len(o.predictions) == 1 for o in found)
    expected = alone(settings, photos[:3])
    assert [o.predictions[0]["label"] for o in found[:3]] == [e.predictions[0]["label"] for e in expected]


def test_every_photo_unreadable_still_one_error_each(settings):
    photos = [("a.jpg", BROKEN), ("b.png", b"\x89PNG but no"), ("c.webp", b"RIFF")]
    found = in_order(classify_many(settings.client(), settings, photos, 3), 3)
    assert all(o.error and "is not an image" in o.error and f"**{o.filename}**" in o.error for o in found)


class Flaky(BaseHTTPRequestHandler):
    """In front of the real inference API: the n-th request gets script[n] ("drop": the connection closed
    without an answer; "busy": TorchServe's own 503), later ones are forwarded (a busy or restarting
    server, on demand)."""

    target = ""
    script: list[str] = []
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        action = self.script[len(self.seen)] if len(self.seen) < len(self.script) else "forward"
        self.seen.append(action)
        if action == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif action == "busy":
            self._send(503, b'{"code": 503, "type": "ServiceUnavailableException", "message": "Model busy"}')
        else:
            keep = ("content-type", "authorization", "x-topk")
            headers = {k: v for k, v in self.headers.items() if k.lower() in keep}
            answer = requests.post(f"{self.target}{self.path}", data=body, headers=headers, timeout=60)
            self._send(answer.status_code, answer.content)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def flaky_server(torchserve: TorchServe, script: list[str]) -> Iterator[tuple[Settings, list[str]]]:
    """Settings pointing at a Flaky proxy of the real server, and the list of what it did."""
    handler = type("FlakyHandler", (Flaky,), {"target": torchserve.endpoints.inference, "script": script, "seen": []})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_port}"
        yield (
            Settings(Endpoints(url, torchserve.endpoints.management), model=MODEL, key_file=torchserve.key_file),
            (handler.seen),
        )
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_dropped_connection_and_busy_answer_are_retried(torchserve, settings, folder_photos):
    photos = folder_photos[:5]
    with flaky_server(torchserve, ["drop", "busy"]) as (flaky, seen):
        found = send(flaky.client(), flaky, photos, DEFAULTS.topk, pauses=(0.1, 0.1, 0.1))
    assert seen == ["drop", "busy", "forward"]
    assert all(o.ok for o in found)
    assert all(same_answer(o, e) for o, e in zip(found, alone(settings, photos), strict=True))


def test_a_server_busy_through_every_retry_leaves_the_photos_to_ask_again(torchserve, folder_photos):
    with flaky_server(torchserve, ["busy"] * 3) as (flaky, seen):
        found = send(flaky.client(), flaky, folder_photos[:5], DEFAULTS.topk, pauses=(0.1, 0.1))
    assert seen == ["busy"] * 3
    assert all(o.retry and "busy" in o.error for o in found)  # shown now, not kept: asked again on the next run


# --- the timing comparison behind PER_REQUEST (not a test of speed) -------------------------------------


def timing_wanted(config: pytest.Config) -> bool:
    return "timing" in (config.option.keyword or "") or bool(os.environ.get("UI_BATCH_TIMING"))


@pytest.fixture(scope="module")
def served_as_shipped(tmp_path_factory) -> Iterator[TorchServe]:
    """A server with the project's own model-config.yaml (workers, batching), as `make run` serves."""
    store = build_test_archive(tmp_path_factory.mktemp("shipped-store"))
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("shipped-run"), store) as server:
        yield server


def test_timing_one_photo_per_request_against_several(request, tmp_path, capsys):
    if not timing_wanted(request.config):
        pytest.skip("a benchmark: run with -k timing or UI_BATCH_TIMING=1")
    server = request.getfixturevalue("served_as_shipped")
    folder = tmp_path / "photos"
    photos = [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in make_photo_folder(folder, 120)]
    settings = Settings(server.endpoints, model=MODEL, key_file=server.key_file)
    client = settings.client()
    list(classify_many(client, settings, photos[:16], DEFAULTS.topk, per_request=8))  # warm-up
    rounds = int(os.environ.get("UI_BATCH_ROUNDS", "4"))
    seconds: dict[int, list[float]] = {1: [], PER_REQUEST if PER_REQUEST != 1 else 8: []}
    for _ in range(rounds):
        for per_request in seconds:  # interleaved: A, B, A, B...
            start = time.perf_counter()
            found = list(classify_many(client, settings, photos, DEFAULTS.topk, per_request=per_request))
            seconds[per_request].append(time.perf_counter() - start)
            assert len(found) == len(photos) and all(o.ok for _, o in found)
    with capsys.disabled():
        print(f"\n{len(photos)} photos, {PARALLEL} requests in flight, {rounds} rounds interleaved:")
        for per_request, times in seconds.items():
            print(
                f"  {per_request} per request: median {statistics.median(times):.2f} s "
                f"({len(photos) / statistics.median(times):.1f} photos/s); runs {', '.join(f'{t:.2f}' for t in times)}"
            )
