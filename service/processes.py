"""Process groups and PID files: how a server (or the UI) started in its own session is found and stopped.

A server's run directory holds a PID file with the launcher's PID and start time; the start
time keeps a later, unrelated process that reused the number from being taken for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

PID_FILE = "server.pid"
T = TypeVar("T")


def write_pid(run_dir: Path, pid: int, name: str = PID_FILE) -> None:
    created = psutil.Process(pid).create_time()
    (Path(run_dir) / name).write_text(json.dumps({"pid": pid, "created": created}))


def read_pid(run_dir: Path, name: str = PID_FILE) -> dict | None:
    """The PID file's record {"pid", "created"}, whether or not that process still runs."""
    try:
        record = json.loads((Path(run_dir) / name).read_text())
        return {"pid": int(record["pid"]), "created": float(record["created"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pid(run_dir: Path, name: str = PID_FILE) -> int | None:
    """The PID in the run directory's PID file if any process of its group still runs (the
    launcher, or Java after the launcher died); a stale file is removed."""
    record = read_pid(run_dir, name)
    if record and group_members(record["pid"], since=record["created"]):
        return record["pid"]
    (Path(run_dir) / name).unlink(missing_ok=True)
    return None


def stop_recorded(run_dir: Path, name: str, process: object | None, timeout: float) -> None:
    """Stop a process group started by us (`process`, a Popen) or, from another command (`make stop`
    after `make serve`), the one its PID file names; remove the PID file."""
    record = read_pid(run_dir, name)
    if process is not None:
        stop_group(process.pid, timeout)  # type: ignore[attr-defined]
        process.wait()  # type: ignore[attr-defined]
    elif record:
        stop_group(record["pid"], timeout, since=record["created"])
    (Path(run_dir) / name).unlink(missing_ok=True)


def group_members(pgid: int, since: float = 0.0) -> list[psutil.Process]:
    """Live (not zombie) processes of process group `pgid` started at `since` or later.

    Servers and the UI start in their own session, so their group id is the launcher's PID;
    `since` (the launcher's start time) keeps a later process that reused the number out."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.create_time() >= since and alive(p):
                members.append(p)
        except (OSError, psutil.Error):
            pass
    return members


def alive(p: psutil.Process) -> bool:
    """A process that ends between two psutil calls raises instead of answering: that is gone too."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_group(pid: int, timeout: float, since: float = 0.0) -> None:
    """SIGTERM the process group (launcher, Java, workers), SIGKILL whatever outlives the timeout.

    A zombie counts as stopped: its parent (maybe not us) reaps it."""
    members = group_members(pid, since)
    if not members:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        for p in members:
            try:
                p.send_signal(sig)  # psutil checks the PID still names the same process
            except psutil.Error:
                pass
        deadline = time.monotonic() + wait
        while (members := [p for p in members if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not members:
            return


def wait_until(ready: Callable[[], T | None], timeout: float, what: str, process: subprocess.Popen | None = None,
               step: float = 0.3) -> T:
    """Poll `ready()` until it returns something (None, or an OSError/ValueError/KeyError such as a refused
    connection or a half-written answer, means not yet). Fails at once if `process` exits, else with a
    TimeoutError naming `what` (and where to look) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            name, _, where = what.partition(";")
            raise RuntimeError(f"{name} exited with {process.returncode}" + (f";{where}" if where else ""))
        try:
            result = ready()
        except (OSError, ValueError, KeyError):
            result = None
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(step)


class Started:
    """A service used as `with X(...) as x:`: started and ready inside the block, stopped on leaving
    it whatever happened (also when it never became ready). Subclasses give start, wait_ready, stop."""

    def start(self) -> object:
        raise NotImplementedError

    def wait_ready(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
