"""Faults on servers of our own (never the shared session server): a worker SIGKILLed under load,
a launcher killed outright, Ctrl-C and `make stop`. Figures go to test-output/faults.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from service.bench.load import Load
from service.local.torchserve import TORCHSERVE_PID_FILE, TorchServe
from service.photos import grace_hopper
from service.processes import PID_FILE, group_members, running_pid, wait_until
from tests.conftest import MODEL, ROOT

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def own_server(model_store, tmp_path_factory):
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("faults"), model_store) as server:
        assert server.client().scale_workers(MODEL, 2).status_code == 200
        yield server


def worker_status(client) -> dict[int, str]:
    return {w["pid"]: w["status"] for v in client.describe_model(MODEL).json() for w in v["workers"]}


def test_sigkill_a_worker_under_load(own_server, output_dir):
    client = own_server.client()
    before = worker_status(client)
    assert len(before) == 2 and set(before.values()) == {"READY"}
    image = grace_hopper().read_bytes()
    load, stop = Load(client, MODEL, image, timeout=30), threading.Event()
    runner = threading.Thread(target=load.closed_loop, args=(4,), kwargs={"until": stop})
    runner.start()
    wait_until(lambda: sum(s == 200 for _, s, _ in load.results) >= 20 or None, 60, "the load")  # in full swing
    victim = next(iter(before))
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replaced_after = None
    while time.monotonic() - killed_at < 60:
        workers = worker_status(client)
        if victim not in workers and list(workers.values()).count("READY") == 2:
            replaced_after = time.monotonic() - killed_at
            break
        time.sleep(0.25)
    if replaced_after is not None:  # and answered by the new worker for a while
        answered = sum(s == 200 for _, s, _ in load.results)
        wait_until(lambda: sum(s == 200 for _, s, _ in load.results) >= answered + 20 or None, 60, "the load")
    stop.set()
    runner.join(60)
    results = load.results

    after_kill = [r for r in results if r[0] + r[2] >= killed_at]
    failed = [(round(t - killed_at, 2), s) for t, s, _ in after_kill if s != 200]
    first_ok = min((t + d - killed_at for t, s, d in after_kill if s == 200), default=None)
    unanswered = [(round(t - killed_at, 2), s) for t, s, _ in results if not isinstance(s, int)]
    figures = {
        "requests": len(results),
        "requests_failed": len(failed),
        "failed_statuses": sorted({str(s) for _, s in failed}),
        "unanswered": len(unanswered),
        "first_200_after_kill_s": round(first_ok, 2) if first_ok is not None else None,
        "worker_replaced_after_s": round(replaced_after, 2) if replaced_after is not None else None,
        "longest_request_s": round(max(d for _, _, d in results), 2),
    }
    (output_dir / "faults.json").write_text(json.dumps({"sigkill_worker": figures}, indent=2) + "\n")
    print(figures)
    # TorchServe 0.12 loses the requests its frontend had taken for the dying worker's next batch
    # while it waited maxBatchDelay for more (WorkerThread answers "Worker died" only for a batch
    # already sent, then BatchAggregator.cleanJobs() drops the rest; docs/RELIABILITY.md): one
    # request sent at the moment of the kill can go unanswered. Any other hang fails.
    assert len(unanswered) <= 1 and all(abs(t) < 1.0 for t, _ in unanswered), unanswered
    assert len(failed) <= 8, failed  # at most the batch (4) the dead worker held, plus its next one
    assert all(500 <= s < 600 for _, s in failed if isinstance(s, int))
    assert replaced_after is not None and replaced_after < 30
    assert first_ok is not None and first_ok < 5
    assert client.predict(MODEL, image, filename="p.jpg").status_code == 200


def assert_nothing_left(run_dir, members: list[psutil.Process]) -> None:
    left = [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.name()) for p in left]
    assert not (run_dir / PID_FILE).exists() and not (run_dir / TORCHSERVE_PID_FILE).exists()


def serve_py(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "serve.py"), *args], capture_output=True,
                          text=True, timeout=240, **kwargs)


def test_make_stop_after_the_launcher_was_killed(model_store, tmp_path):
    """SIGKILL the torchserve launcher: Java and its worker live on. `make stop` (serve.py stop)
    still finds and stops them, removes both PID files, and the next start works."""
    server = TorchServe.on_free_ports(tmp_path / "run", model_store)
    server.start()
    try:
        server.wait_ready()
        launcher = psutil.Process(server.process.pid)
        members = [launcher, *launcher.children(recursive=True)]
        launcher.kill()
        server.process.wait()
        assert any(p.is_running() and "java" in p.name() for p in members)
        assert running_pid(server.run_dir) == launcher.pid  # still counted as running: Java is
        started = time.monotonic()
        result = serve_py("stop", "--run-dir", str(server.run_dir))
        assert result.returncode == 0 and "stopped" in result.stdout
        assert time.monotonic() - started < 40
        assert_nothing_left(server.run_dir, members)
    finally:
        server.stop()
    server.process = None
    server.start()
    try:
        server.wait_ready()
        assert server.client().predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200
    finally:
        server.stop()


def test_ctrl_c_then_start_and_make_stop(model_store, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "scripts" / "serve.py"), "run", "--no-ui", "--run-dir", str(run_dir),
               "--model-store", str(model_store)]
    # As in a terminal: SIGINT handled by default (a background shell may have ignored it for us).
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output = []
    try:
        for line in run.stdout:
            output.append(line)
            if "Ctrl-C stops everything" in line:
                break
        pid = running_pid(run_dir)
        assert pid, "".join(output)
        members = group_members(pid)
        assert any("java" in p.name() for p in members)
        started = time.monotonic()
        run.send_signal(signal.SIGINT)
        assert run.wait(60) == 0
        stop_seconds = time.monotonic() - started
        assert_nothing_left(run_dir, members)
        assert stop_seconds < 40
    finally:
        if run.poll() is None:
            run.kill()
            TorchServe(run_dir, model_store).stop()

    # The next start is not blocked; `make stop` then leaves nothing either.
    assert serve_py("start", "--run-dir", str(run_dir), "--model-store", str(model_store)).returncode == 0
    pid = running_pid(run_dir)
    members = group_members(pid)
    result = serve_py("stop", "--run-dir", str(run_dir))
    assert result.returncode == 0 and "stopped" in result.stdout
    assert_nothing_left(run_dir, members)
    assert serve_py("status", "--run-dir", str(run_dir)).returncode == 1
