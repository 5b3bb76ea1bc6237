"""The TorchServe glue, driven with TorchServe's own Context class but no server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import zipfile

import pytest
import torch
import yaml
from ts.context import Context, RequestProcessor

from handler import cores, torchserve_handler
from handler.settings import DEFAULTS
from handler.torchserve_handler import ImageClassifierHandler
from service.photos import photos
from tests.conftest import MODEL, build_test_archive


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


def record_threads(monkeypatch, owner: object, name: str) -> list[int]:
    """The intra-op thread count at each call of a function (a handler method, or a module's
    function the handler calls), from now on."""
    seen: list[int] = []
    original = getattr(owner, name)

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(owner, name, spy)
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


def test_shared_cores_decode_on_one_thread_and_run_the_model_on_the_free_ones(model_store, tmp_path, monkeypatch):
    """intra_op_threads: shared. Decoding holds one core, so it must run on one thread even right
    after a forward pass that used every core (stale threads spin-wait on cores other workers
    use: measured 185 -> 235 int8 requests/s at 16 clients); the forward pass of a lone worker
    then takes every core."""
    if cores.available_cores() < 2:
        pytest.skip("needs 2 cores")
    handler, context = load_handler(model_store, tmp_path, intra_op_threads="shared")
    assert handler.threads.budget is not None
    # Other programs on this machine must not step the passes back here: that rule has its own tests.
    monkeypatch.setattr(cores, "run_queue_wait_ns", lambda: 0)
    seen = {"decode": record_threads(monkeypatch, torchserve_handler, "decode_for_model"),
            "predict": record_threads(monkeypatch, handler, "inference")}
    image = photos()["chelsea"].read_bytes()
    for _ in range(2):
        statuses = [s for s, _ in run_batch((handler, context), [{"body": image}, {"body": image}])]
        assert statuses == [200, 200]
    assert seen["decode"] == [1, 1, 1, 1]
    assert seen["predict"] == [cores.available_cores()] * 2


def test_shared_cores_step_back_from_a_core_another_program_keeps_busy(model_store, tmp_path, monkeypatch):
    """Busy programs beside the server take no core locks. A forward pass on every core then
    waits at each op for the thread parked behind them (measured 20 -> 320-480 ms a pass), so
    the worker must drop to fewer threads, and take every core again once they are gone."""
    n = cores.available_cores()
    if n < 2:
        pytest.skip("needs 2 cores")
    handler, context = load_handler(model_store, tmp_path, intra_op_threads="shared")
    budget = handler.threads.budget
    threads_seen = record_threads(monkeypatch, handler, "inference")
    image = [{"body": photos()["chelsea"].read_bytes()}]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n - 1)]
    try:
        # Crowding is judged over the passes' time (cores.CROWDED_MIN_S), so allow a few seconds of them.
        deadline = time.monotonic() + 10
        while budget.ceiling == n and time.monotonic() < deadline:
            assert run_batch((handler, context), image)[0][0] == 200
        assert run_batch((handler, context), image)[0][0] == 200
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert threads_seen[0] == n and threads_seen[-1] < n, threads_seen
    assert budget.ceiling < n and budget.retry_at > 0
    # Quiet again: the next retry finds the cores free (retries are due at once here).
    threads_seen.clear()
    deadline = time.monotonic() + 30
    while budget.ceiling < n and time.monotonic() < deadline:
        budget.retry_at = 0.0
        assert run_batch((handler, context), image)[0][0] == 200
    assert budget.ceiling == n, threads_seen
    assert run_batch((handler, context), image)[0][0] == 200 and threads_seen[-1] == n


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


def test_kserve_requests_get_answers_and_errors_in_their_own_shape(handler_and_context, monkeypatch):
    """Each request is parsed once, at the start: its protocol shapes its answer and its error
    (here a v2 request whose image is not base64), and a v2 request without its own id gets
    TorchServe's request id."""
    from handler import request as request_module

    b64 = base64.b64encode(photos()["chelsea"].read_bytes()).decode()
    v2_input = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}
    requests = [
        {"body": {"id": "mine", "inputs": [v2_input]}},
        {"body": {"inputs": [{**v2_input, "data": ["@@@"]}]}},
        {"body": {"instances": [{"data": b64}], "topk": 2}},
        {"body": {"inputs": [v2_input]}},
    ]
    _, context = handler_and_context
    monkeypatch.setattr(context, "request_ids", {i: f"ts-{i}" for i in range(len(requests))})
    body_reads = record_threads(monkeypatch, request_module, "json_body")
    (s0, a0), (s1, a1), (s2, a2), (s3, a3) = run_batch(handler_and_context, requests)
    assert len(body_reads) == len(requests), "each request's body is read once"
    assert s0 == 200 and a0["id"] == "mine" and [o["name"] for o in a0["outputs"]] == ["label", "index", "probability"]
    assert s1 == 400 and a1["type"] == "InvalidBase64" and a1["error"] == a1["message"]
    assert s2 == 200 and len(a2["predictions"]) == 1 and len(a2["predictions"][0]) == 2
    assert s3 == 200 and a3["id"] == "ts-3"


def test_settings_come_from_the_archive_yaml_and_a_wrong_one_is_named(model_store, tmp_path, handler_and_context):
    handler, _ = handler_and_context
    described = run_batch(handler_and_context, [{}], [{"describe": "True"}])[0][1]
    assert described["settings"] == handler.settings.to_dict()
    assert described["settings"]["intra_op_threads"] == "shared" and described["settings"]["topk"] == DEFAULTS.topk
    custom = load_handler(model_store, tmp_path / "custom", topk=5, intra_op_threads=1)
    assert custom[0].threads.budget is None and custom[0].threads.threads == 1
    image = photos()["chelsea"].read_bytes()
    assert len(run_batch(custom, [{"body": image}])[0][1]["predictions"]) == 5
    with pytest.raises(ValueError, match="handler setting max_pixels must be a whole number >= 1, got -1"):
        load_handler(model_store, tmp_path / "bad", max_pixels=-1)


def test_a_model_with_fewer_classes_than_the_default_topk_answers_all_of_them(tmp_path):
    """A 2-class model (a fine-tune, a bring-your-own model) answers its 2 classes by default,
    and a request for more than it has gets a 400 naming the limit: never a failed batch."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["cat", "dog"]))
    store = build_test_archive(tmp_path / "store", labels=str(labels))
    assert DEFAULTS.topk > 2
    handler_and_context = load_handler(store, tmp_path / "model_dir")
    image = photos()["chelsea"].read_bytes()
    (status, answer), (too_many_status, too_many) = run_batch(
        handler_and_context, [{"body": image}, {"body": image}], headers=[{}, {"X-TopK": "3"}]
    )
    assert status == 200 and [p["label"] for p in answer["predictions"]] in (["cat", "dog"], ["dog", "cat"])
    assert too_many_status == 400 and "from 1 to 2" in too_many["message"]
