"""How many threads a worker runs: the fixed rule, the shared core budget, the thread policy."""

from __future__ import annotations

import fcntl
import threading

import pytest
import torch

from handler import cores
from handler.cores import CoreBudget, ThreadPolicy, configured_workers, intra_op_threads, shared_budget


@pytest.mark.parametrize(
    "setting, workers, cores_, expected",
    [("auto", 2, 2, 1), ("auto", 1, 2, 2), ("auto", 4, 2, 1), ("auto", 3, 16, 5), (None, 2, 8, 4), (3, 2, 2, 3)],
)
def test_threads_never_oversubscribe_in_auto(setting, workers, cores_, expected):
    assert intra_op_threads(setting, workers, cores_) == expected


@pytest.mark.parametrize("cores_", [1, 2, 3, 8, 64])
def test_default_workers_times_threads_equals_cores(cores_):
    """No minWorkers/maxWorkers: TorchServe starts one worker per core, and each gets one thread."""
    workers = configured_workers({}, cores_)
    assert workers == cores_ and workers * intra_op_threads("auto", workers, cores_) == cores_


@pytest.mark.parametrize("workers, cores_", [(1, 2), (2, 2), (3, 8), (4, 2), (2, 16)])
def test_auto_threads_never_oversubscribe(workers, cores_):
    threads = intra_op_threads("auto", configured_workers({"maxWorkers": workers}, cores_), cores_)
    assert threads >= 1 and (workers * threads <= cores_ or threads == 1)


def test_shared_core_budget(tmp_path, monkeypatch):
    """Two workers: a lone worker gets every core; two busy workers get one each; never more.
    While a holds every core, b blocks in flock and gets its core only once a releases."""
    a, b = CoreBudget(tmp_path, 2), CoreBudget(tmp_path, 2)  # separate files: like two processes
    a.acquire_one()
    assert a.grow() == 2
    b_waits, a_releases = threading.Event(), threading.Event()
    b_got_a_core_while_a_held_all: list[bool] = []
    real_flock = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        if fd in b.files and operation == fcntl.LOCK_EX:  # b's blocking wait for its core
            b_waits.set()
            real_flock(fd, operation)
            b_got_a_core_while_a_held_all.append(not a_releases.is_set())
            return
        real_flock(fd, operation)

    monkeypatch.setattr(cores.fcntl, "flock", flock)
    got = []
    thread = threading.Thread(target=lambda: (b.acquire_one(), got.append(b.grow())))
    thread.start()
    assert b_waits.wait(10), "b must block for a core while a holds every core"
    a_releases.set()
    a.release()
    thread.join(10)
    assert b_got_a_core_while_a_held_all == [False]
    assert got == [2]  # a released both: b may take both
    b.release()
    a.acquire_one()
    b.acquire_one()
    assert a.grow() == 1 and b.grow() == 1
    a.release()
    b.release()


def test_shared_budget_falls_back_to_a_temporary_directory_then_to_none(tmp_path, monkeypatch):
    """A model directory where no lock files can be made (a regular file stands in the way: that
    holds for root too) moves the budget to a temporary directory; if that fails too, no budget."""
    not_a_directory = tmp_path / "model"
    not_a_directory.write_text("")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(cores.tempfile, "gettempdir", lambda: str(temp))
    budget = shared_budget(not_a_directory, 2)
    assert budget is not None and len(budget.files) == 2
    assert len(list(temp.glob("ts-cores-*/core-*.lock"))) == 2
    monkeypatch.setattr(cores.tempfile, "gettempdir", lambda: str(not_a_directory))
    assert shared_budget(not_a_directory, 2) is None


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_thread_policy_shared_holds_one_core_to_decode_and_grows_for_the_pass(tmp_path, restore_threads):
    policy = ThreadPolicy.from_settings("shared", tmp_path, workers=2, cores=2)
    assert policy.budget is not None and policy.threads == 2 and policy.describe() == "1 to 2 shared"
    other = CoreBudget(tmp_path / ".cores", 2)  # another worker of the same model
    with policy.batch():
        assert torch.get_num_threads() == 1 and len(policy.budget.held) == 1
        other.acquire_one()  # the other worker holds the second core: this pass runs on one
        assert policy.grow() == 1
    other.release()
    with policy.batch():
        assert policy.grow() == 2 == torch.get_num_threads()
    assert policy.budget.held == []
    assert list(policy.each_count()) == [1, 2] and torch.get_num_threads() == 2


@pytest.mark.parametrize("setting, expected", [("auto", 1), (2, 2)])
def test_thread_policy_fixed(tmp_path, restore_threads, setting, expected):
    policy = ThreadPolicy.from_settings(setting, tmp_path, workers=2, cores=2)
    assert policy.budget is None and policy.threads == expected == torch.get_num_threads()
    with policy.batch():
        assert policy.grow() == expected
    assert list(policy.each_count()) == [expected]


def test_thread_policy_shared_without_a_budget_falls_back_to_auto(tmp_path, monkeypatch, restore_threads):
    not_a_directory = tmp_path / "model"
    not_a_directory.write_text("")
    monkeypatch.setattr(cores.tempfile, "gettempdir", lambda: str(not_a_directory))
    policy = ThreadPolicy.from_settings("shared", not_a_directory, workers=2, cores=4)
    assert policy.budget is None and policy.threads == 2 and policy.describe() == "2"


def test_core_ceiling_backs_off_while_crowded_and_recovers(tmp_path, monkeypatch):
    """The ceiling's rules on a scripted run-queue clock: a short burst is not enough (the Java
    frontend's JIT and GC take both cores for tens of ms on a quiet machine); crowded passes adding
    up to CROWDED_MIN_S are; retries come after 1, 2, 4... s and are judged on their own pass; a
    clean retry restores every core."""
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

    assert forward_pass(0.9, 0.03) == 2 and budget.ceiling == 2  # a 30 ms burst: still every core
    assert [forward_pass(0.0, 0.03) for _ in range(5)] == [2] * 5 and budget.ceiling == 2
    assert forward_pass(0.95) == 2 and budget.ceiling == 2  # crowded, but not for long enough yet
    assert forward_pass(0.95) == 2 and budget.ceiling == 1  # the window is crowded: step back
    assert [forward_pass(0.95) for _ in range(5)] == [1] * 5  # no retry before 1 s
    clock["now"] += 1.0
    assert forward_pass(0.95) == 2 and budget.ceiling == 1  # the retry, still crowded
    clock["now"] += 1.0
    assert forward_pass(0.95) == 1  # next retry only after 2 s
    clock["now"] += 1.5
    assert forward_pass(0.0) == 2 and budget.ceiling == 2  # the other program is gone
    assert forward_pass(0.0) == 2 and budget.retry_after == cores.RETRY_SECONDS[0]
