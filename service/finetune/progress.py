"""Training progress: a live bar per epoch on a terminal, one plain line per epoch elsewhere (CI logs)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Metrics:
    loss: float
    accuracy: float

    def __str__(self) -> str:
        return f"loss {self.loss:.4f} acc {100 * self.accuracy:5.1f}%"


class Progress:
    """Writes to `stream` (default stdout); the bar redraws in place only when it is a terminal."""

    WIDTH = 24

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()

    def step(self, phase: str, epoch: int, epochs: int, done: int, total: int, running: Metrics) -> None:
        """After each batch: redraw the bar (terminal only)."""
        if not self.tty:
            return
        filled = self.WIDTH * done // max(1, total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{phase} epoch {epoch}/{epochs} [{bar}] {done}/{total} {running}")
        self.stream.flush()

    def epoch(
        self, phase: str, epoch: int, epochs: int, train: Metrics, val: Metrics, best: bool, seconds: float
    ) -> None:
        """After each epoch: one line with the training and validation figures."""
        mark = "  (best so far)" if best else ""
        line = f"{phase} epoch {epoch}/{epochs}: train {train} | val {val} | {seconds:.1f} s{mark}"
        self.stream.write(("\r\x1b[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()
