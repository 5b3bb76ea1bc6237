"""How many intra-op threads a worker runs on: the thread policy, and the cores shared batch by
batch between one model's TorchServe workers (intra_op_threads: shared).

Rule: workers x threads never exceeds the cores: more threads than cores fight each other
(ResNet-18 on 2 cores, 4 clients: 3 to 12 requests/s with every worker on every core, 37 with
one thread per worker; docs/PERFORMANCE.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Forward passes on several threads whose threads together waited this share of their time for
# a CPU (runnable, not running) share their cores with another program. That costs far more than
# the threads win: every parallel op waits at its barrier for the thread the scheduler parked
# behind the other program (served ResNet-18 beside one busy process: 2 threads 320-480 ms a pass,
# waiting 0.97 of it; alone: 18-23 ms, waiting 0.02 at the median and up to 0.63 in bursts;
# 1 thread: 35 ms). Judged over the last CROWDED_PASSES passes once they add up to CROWDED_MIN_S:
# the Java frontend's JIT compiler and garbage collector take both cores for tens of ms at times,
# and judging two 12 ms passes let such a burst put a lone request on one thread for seconds
# (ONNX Runtime, 1 client: p50 22 instead of 17 ms; docs/PERFORMANCE.md).
CROWDED_WAIT_SHARE = 0.5
CROWDED_PASSES = 16
CROWDED_MIN_S = 0.25
# Once crowded, forward passes use one thread fewer; one more is tried again after this
# long, doubling while the cores stay crowded.
RETRY_SECONDS = (1.0, 32.0)


def run_queue_wait_ns() -> int:
    """Nanoseconds this process's threads have spent runnable but not running (Linux schedstat);
    0 where the kernel does not say, which turns the crowding check off."""
    total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):  # the thread ended, or no schedstat
            continue
    return total


class CoreBudget:
    """The cores one model's workers share, as one lock file per core in the model directory.

    A worker holds one core while it decodes its batch and, for the forward pass, also takes
    every core no other worker holds; it runs the model with that many intra-op threads.
    So threads in use never exceed the cores, a lone request gets all of them (low latency
    at concurrency 1) and under load every worker runs one thread (best throughput).
    flock locks vanish with their process, so a crashed worker cannot leak a core.

    Other programs take no locks: a pass that finds its threads waiting for a CPU lowers the
    ceiling on the cores taken, and a higher one is tried again later (CROWDED_WAIT_SHARE).
    """

    def __init__(self, directory: Path, cores: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.files = [os.open(directory / f"core-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600) for i in range(cores)]
        self.held: list[int] = []
        self.ceiling = cores
        self.retry_at = 0.0
        self.retry_after = RETRY_SECONDS[0]
        self.pass_started: tuple[int, float] | None = None  # (run-queue wait, time) at grow()
        self.passes: deque[tuple[float, float]] = deque(maxlen=CROWDED_PASSES)  # (waited, took) s

    def _try(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held.append(fd)
        return True

    def acquire_one(self) -> None:
        """Block until this worker holds a core (any free one, else wait for its 'own')."""
        if self.held:
            return
        if not any(self._try(fd) for fd in self.files):
            fd = self.files[os.getpid() % len(self.files)]
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.held.append(fd)

    def grow(self) -> int:
        """Take the cores nobody holds, up to the ceiling (one more once a retry is due); return
        how many this worker now holds."""
        retry = self.ceiling < len(self.files) and time.monotonic() >= self.retry_at
        limit = self.ceiling + int(retry)
        for fd in self.files:
            if len(self.held) >= limit:
                break
            if fd not in self.held:
                self._try(fd)
        threads = max(1, len(self.held))
        self.pass_started = (run_queue_wait_ns(), time.monotonic()) if threads > 1 else None
        return threads

    def release(self) -> None:
        if self.pass_started is not None:
            self._judge_pass(len(self.held), *self.pass_started)
            self.pass_started = None
        for fd in self.held:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self.held = []

    def _judge_pass(self, threads: int, wait_before: int, started: float) -> None:
        now = time.monotonic()
        waited = (run_queue_wait_ns() - wait_before) / 1e9
        took = max(now - started, 1e-6)
        if threads > self.ceiling:  # a retry: this pass alone decides
            crowded = waited / took > CROWDED_WAIT_SHARE
        else:
            self.passes.append((waited, took))
            total = sum(t for _, t in self.passes)
            crowded = total >= CROWDED_MIN_S and sum(w for w, _ in self.passes) / total > CROWDED_WAIT_SHARE
        ceiling = min(self.ceiling, threads - 1) if crowded else max(self.ceiling, threads)
        if ceiling < self.ceiling:
            log.info(
                "cores crowded by another program (threads waited %.0f ms for a CPU in a %.0f ms pass): "
                "forward passes on at most %d thread(s), retrying more in %.0f s",
                waited * 1000,
                took * 1000,
                ceiling,
                self.retry_after,
            )
        elif ceiling > self.ceiling:
            log.info("cores free again: forward passes on up to %d threads", ceiling)
        if ceiling != self.ceiling:
            self.passes.clear()
        self.ceiling = ceiling
        if crowded:
            self.retry_at = now + self.retry_after
            self.retry_after = min(2 * self.retry_after, RETRY_SECONDS[1])
        else:
            self.retry_after = RETRY_SECONDS[0]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def intra_op_threads(setting: str | int | None, workers: int, cores: int) -> int:
    """Threads per worker so that workers x threads never exceeds the cores."""
    if setting in (None, "auto"):
        return max(1, cores // max(1, workers))
    return max(1, int(setting))  # type: ignore[arg-type]


def configured_workers(yaml_config: dict, cores: int) -> int:
    """The model's worker count; without minWorkers/maxWorkers TorchServe starts one per core."""
    return int(yaml_config.get("maxWorkers") or yaml_config.get("minWorkers") or cores)


def shared_budget(model_dir: Path, cores: int) -> CoreBudget | None:
    """The model's core budget: lock files in its directory (shared by all its workers), else in a
    temporary directory named after it; None (fixed threads) if neither can be written."""
    digest = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    for directory in (model_dir / ".cores", Path(tempfile.gettempdir()) / f"ts-cores-{digest}"):
        try:
            return CoreBudget(directory, cores)
        except OSError as e:
            log.warning("cannot keep the core budget in %s (%s)", directory, e)
    return None


def set_threads(threads: int) -> None:
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class ThreadPolicy:
    """The intra-op threads of one worker, batch by batch.

    Fixed ("auto" or a number): the same count for every batch. Shared: a batch decodes on the
    one core it holds and its forward pass grows onto the cores no other worker holds.

    `count` is the threads the model runs on now. torch follows it while torch runs the model;
    for another runtime (ONNX Runtime, OpenVINO: their own thread pools, sized by `count`) torch
    stays on one thread for its small ops, so its idle OpenMP threads never spin beside the
    runtime's (measured: a lone ONNX Runtime request 19.4 -> 15 ms in the handler).
    """

    def __init__(self, threads: int, budget: CoreBudget | None = None) -> None:
        self.threads = threads  # a fixed worker's count; with a budget, the most a pass can take
        self.budget = budget
        self.count = threads
        self.torch_runs_model = True

    def _use(self, threads: int) -> None:
        self.count = threads
        set_threads(threads if self.torch_runs_model else 1)

    def runtime_runs_model(self) -> None:
        """The model runs on another runtime than torch, which reads `count` itself."""
        self.torch_runs_model = False
        self._use(self.count)

    @classmethod
    def from_settings(cls, setting: str | int, model_dir: Path, workers: int, cores: int) -> ThreadPolicy:
        """From the intra_op_threads setting; "shared" falls back to "auto" if no budget can be kept."""
        budget = shared_budget(model_dir, cores) if setting == "shared" else None
        fixed = "auto" if setting == "shared" else setting
        policy = cls(cores if budget else intra_op_threads(fixed, workers, cores), budget)
        torch.set_num_threads(policy.threads)
        return policy

    def describe(self) -> str:
        return f"1 to {self.threads} shared" if self.budget else str(self.threads)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Around one batch: with a budget, hold one core (and run one thread) until it is answered."""
        if self.budget is None:
            yield
            return
        self.budget.acquire_one()
        # Decode on the one core held. Threads left over from the last forward pass would make
        # every elementwise op wait for a thread whose core another worker is using.
        self._use(1)
        try:
            yield
        finally:
            self.budget.release()

    def grow(self) -> int:
        """Before the forward pass: take the free cores (with a budget); return the threads it runs on."""
        if self.budget is not None and self.budget.held:
            self._use(self.budget.grow())
        return self.count

    def each_count(self) -> Iterator[int]:
        """Run on every thread count a forward pass can get, in turn (warm-up specialises the
        graph per count); back to the worker's own count afterwards."""
        try:
            for threads in range(1, self.threads + 1) if self.budget else [self.threads]:
                self._use(threads)
                yield threads
        finally:
            self._use(self.threads)
