"""The container's main process: TorchServe and its front, and an exit code that tells the truth.

TorchServe's launcher exits 0 when its Java frontend is killed (by the kernel's OOM killer, say),
so a container running it directly stops "successfully" and a restart policy that restarts only
failures leaves the service down. Here each service runs in its own process group; when any of
them ends (or the frontend's Java process disappears from its group) without being asked to,
the others are stopped and the container exits 1. SIGTERM stops all of them, gracefully, exit 0.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field

import psutil

from service.processes import alive, group_members, stop_group

log = logging.getLogger("supervisor")


@dataclass
class Service:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    watched: list[psutil.Process] = field(default_factory=list)  # e.g. the Java frontend under the launcher
    watch_names: tuple[str, ...] = ()

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, start_new_session=True)

    def problem(self) -> str | None:
        """Why this service no longer serves, or None while it does."""
        assert self.process is not None
        if self.process.poll() is not None:
            return f"{self.name} exited with code {self.process.returncode}"
        if self.watch_names and not self.watched:
            self.watched = [p for p in group_members(self.process.pid) if _name(p) in self.watch_names]
        for p in self.watched:
            if not alive(p):
                return f"{self.name}'s {'/'.join(self.watch_names)} process (pid {p.pid}) is gone"
        return None


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:  # ended since it was listed
        return ""


class Supervisor:
    def __init__(self, services: list[Service], grace: float = 25.0) -> None:
        self.services = services
        self.grace = grace
        self.stopping = False

    def _stop_requested(self, signum: int, frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        self.stopping = True

    def run(self, poll: float = 0.5) -> int:
        signal.signal(signal.SIGTERM, self._stop_requested)
        signal.signal(signal.SIGINT, self._stop_requested)
        try:
            for service in self.services:
                service.start()
        except OSError as e:
            log.error("cannot start a service: %s", e)
            self.stop_all()
            return 1
        code = 0
        while not self.stopping:
            problems = [p for p in (s.problem() for s in self.services) if p]
            if problems:
                log.error("%s: stopping the container so that it is restarted", "; ".join(problems))
                code = 1
                break
            time.sleep(poll)
        self.stop_all()
        return code

    def stop_all(self) -> None:
        for service in self.services:
            if service.process is not None:
                stop_group(service.process.pid, self.grace)
                service.process.wait()
