"""Cores shared batch by batch between one model's TorchServe workers (intra_op_threads: shared).

A separate module because TorchServe wants exactly one class in the handler's own file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class CoreBudget:
    """The cores one model's workers share, as one lock file per core in the model directory.

    A worker holds one core while it decodes its batch and, for the forward pass, also takes
    every core no other worker holds; it runs the model with that many intra-op threads.
    So threads in use never exceed the cores, a lone request gets all of them (low latency
    at concurrency 1) and under load every worker runs one thread (best throughput).
    flock locks vanish with their process, so a crashed worker cannot leak a core.
    """

    def __init__(self, directory: Path, cores: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.files = [os.open(directory / f"core-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600) for i in range(cores)]
        self.held: list[int] = []

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
        """Take every core nobody holds; return how many this worker now holds."""
        for fd in self.files:
            if fd not in self.held:
                self._try(fd)
        return max(1, len(self.held))

    def release(self) -> None:
        for fd in self.held:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self.held = []
