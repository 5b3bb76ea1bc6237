"""The TorchServe glue, driven with TorchServe's own Context class but no server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile

import pytest
import torch
import yaml
from ts.context import Context, RequestProcessor

from handler.torchserve_handler import ImageClassifierHandler, intra_op_threads
from service.photos import photos
from tests.conftest import MODEL


def load_handler(model_store, model_dir, **handler_settings) -> tuple[ImageClassifierHandler, Context]:
    """The archive unpacked into model_dir and initialized as TorchServe would, with some of its
    handler settings replaced."""
    with zipfile.ZipFile(model_store / f"{MODEL}.mar") as z:
        z.extractall(model_dir)
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    model_yaml = yaml.safe_load((model_dir / manifest["model"]["configFile"]).read_text())
    model_yaml["handler"] = {**model_yaml.get("handler", {}), **handler_settings}
    context = Context(MODEL, str(model_dir), manifest, 4, None, "0.12.0", model_yaml_config=model_yaml)
    handler = ImageClassifierHandler()
    handler.initialize(context)
    return handler, context


@pytest.fixture(scope="module")
def handler_and_context(model_store, tmp_path_factory):
    return load_handler(model_store, tmp_path_factory.mktemp("model_dir"))


def run_batch(handler_and_context, requests: list[dict], headers: list[dict] | None = None) -> list[tuple]:
    handler, context = handler_and_context
    context.request_processor = [RequestProcessor(h) for h in headers or [{} for _ in requests]]
    answers = handler.handle(requests, context)
    assert len(answers) == len(requests)
    return [(context.get_response_status(i)[0] or 200, json.loads(a)) for i, a in enumerate(answers)]


def record_threads(monkeypatch, handler: ImageClassifierHandler, method: str) -> list[int]:
    """The intra-op thread count at each call of one of the handler's methods, from now on."""
    seen: list[int] = []
    original = getattr(handler, method)

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(handler, method, spy)
    return seen


def test_batch_with_bad_items_answers_each_on_its_own(handler_and_context):
    good = photos()["chelsea"].read_bytes()
    results = run_batch(
        handler_and_context,
        [{"body": good}, {"body": b"not an image"}, {"body": good, "topk": b"0"}, {"data": good}],
        [{}, {}, {}, {"X-TopK": "2"}],
    )
    (s0, a0), (s1, a1), (s2, a2), (s3, a3) = results
    assert s0 == 200 and len(a0["predictions"]) == 3 and a0["model"]["random_weights"] is True
    assert s1 == 415 and a1["type"] == "UnsupportedImage"
    assert s2 == 400 and a2["type"] == "InvalidParameter"
    assert s3 == 200 and a3["predictions"] == a0["predictions"][:2]
    _, context = handler_and_context
    assert all(context.get_response_content_type(i) == "application/json" for i in range(4))


def test_batch_of_only_bad_items(handler_and_context):
    results = run_batch(handler_and_context, [{"body": b""}, {}])
    assert [status for status, _ in results] == [400, 400]
    assert {answer["type"] for _, answer in results} == {"MissingImage"}


def test_answers_do_not_depend_on_batch_mates(handler_and_context):
    images = [p.read_bytes() for p in photos().values()]
    alone = [run_batch(handler_and_context, [{"body": image}])[0][1]["predictions"] for image in images[:4]]
    batch = run_batch(handler_and_context, [{"body": image} for image in images[:4]])
    together = [answer["predictions"] for _, answer in batch]
    for a, b in zip(alone, together, strict=True):
        assert [p["index"] for p in a] == [p["index"] for p in b]
        assert all(abs(x["probability"] - y["probability"]) < 1e-4 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "setting, workers, cores, expected",
    [("auto", 2, 2, 1), ("auto", 1, 2, 2), ("auto", 4, 2, 1), ("auto", 3, 16, 5), (None, 2, 8, 4), (3, 2, 2, 3)],
)
def test_threads_never_oversubscribe_in_auto(setting, workers, cores, expected):
    assert intra_op_threads(setting, workers, cores) == expected


def test_shared_cores_decode_on_one_thread_and_run_the_model_on_the_free_ones(model_store, tmp_path, monkeypatch):
    """intra_op_threads: shared. Decoding holds one core, so it must run on one thread even right
    after a forward pass that used every core (stale threads spin-wait on cores other workers
    use: measured 185 -> 235 int8 requests/s at 16 clients); the forward pass of a lone worker
    then takes every core."""
    from handler import torchserve_handler

    if torchserve_handler.available_cores() < 2:
        pytest.skip("needs 2 cores")
    handler, context = load_handler(model_store, tmp_path, intra_op_threads="shared")
    assert handler.budget is not None
    seen = {name: record_threads(monkeypatch, handler, name) for name in ("decode", "predict")}
    image = photos()["chelsea"].read_bytes()
    for _ in range(2):
        statuses = [s for s, _ in run_batch((handler, context), [{"body": image}, {"body": image}])]
        assert statuses == [200, 200]
    assert seen["decode"] == [1, 1, 1, 1]
    assert seen["predict"] == [torchserve_handler.available_cores()] * 2


def test_shared_cores_step_back_from_a_core_another_program_keeps_busy(model_store, tmp_path, monkeypatch):
    """Busy programs beside the server take no core locks. A forward pass on every core then
    waits at each op for the thread parked behind them (measured 20 -> 320-480 ms a pass), so
    the worker must drop to fewer threads, and take every core again once they are gone."""
    from handler import torchserve_handler

    n = torchserve_handler.available_cores()
    if n < 2:
        pytest.skip("needs 2 cores")
    handler, context = load_handler(model_store, tmp_path, intra_op_threads="shared")
    threads_seen = record_threads(monkeypatch, handler, "predict")
    image = [{"body": photos()["chelsea"].read_bytes()}]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n - 1)]
    try:
        for _ in range(6):
            assert run_batch((handler, context), image)[0][0] == 200
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert threads_seen[0] == n and threads_seen[-1] < n, threads_seen
    assert handler.budget.ceiling < n and handler.budget.retry_at > 0
    # Quiet again: the next retry finds the cores free (retries are due at once here).
    threads_seen.clear()
    deadline = time.monotonic() + 30
    while handler.budget.ceiling < n and time.monotonic() < deadline:
        handler.budget.retry_at = 0.0
        assert run_batch((handler, context), image)[0][0] == 200
    assert handler.budget.ceiling == n, threads_seen
    assert run_batch((handler, context), image)[0][0] == 200 and threads_seen[-1] == n


def test_core_ceiling_backs_off_while_crowded_and_recovers(tmp_path, monkeypatch):
    """The ceiling's rules on a scripted run-queue clock: one crowded pass is not enough (bursts
    happen on a quiet machine), two are; retries come after 1, 2, 4... s; a clean retry restores."""
    from handler import cores

    clock = {"now": 100.0, "wait_ns": 0}
    monkeypatch.setattr(cores.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(cores, "run_queue_wait_ns", lambda: clock["wait_ns"])
    budget = cores.CoreBudget(tmp_path, 2)

    def forward_pass(wait_share: float, seconds: float = 0.1) -> int:
        budget.acquire_one()
        threads = budget.grow()
        clock["now"] += seconds
        clock["wait_ns"] += int(wait_share * seconds * 1e9) if threads > 1 else 0
        budget.release()
        return threads

    assert forward_pass(0.9) == 2 and budget.ceiling == 2  # one burst: still every core
    assert forward_pass(0.0) == 2 and forward_pass(0.95) == 2 and budget.ceiling == 2
    assert forward_pass(0.95) == 2 and budget.ceiling == 1  # crowded twice in a row
    assert [forward_pass(0.95) for _ in range(5)] == [1] * 5  # no retry before 1 s
    clock["now"] += 1.0
    assert forward_pass(0.95) == 2 and budget.ceiling == 1  # the retry, still crowded
    clock["now"] += 1.0
    assert forward_pass(0.95) == 1  # next retry only after 2 s
    clock["now"] += 1.5
    assert forward_pass(0.0) == 2 and budget.ceiling == 2  # the other program is gone
    assert forward_pass(0.0) == 2 and budget.retry_after == cores.RETRY_SECONDS[0]


def test_describe_request_in_a_batch_answers_only_itself(handler_and_context):
    """TorchServe's customized describe (GET /models/{name}?customized=true) reaches handle() as a
    request with a "describe" header; a client can send that header too. Either way it gets the
    worker's self-description and its batch mates their own answers."""
    image = photos()["chelsea"].read_bytes()
    requests = [{"body": image}, {"body": b""}, {"body": image}]
    results = run_batch(handler_and_context, requests, [{}, {"describe": "True"}, {}])
    assert [status for status, _ in results] == [200, 200, 200]
    description = results[1][1]
    assert description["serving"] is True and description["problem"] is None
    assert description["classes"] == 1000 and description["settings"]["max_image_bytes"] == 30 * 2**20
    assert results[0][1]["predictions"] == results[2][1]["predictions"]
