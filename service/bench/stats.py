"""Summary statistics of measured latencies, one definition for the soak and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (q in 0..100) by nearest rank, None without values.

    Nearest rank (a value that was measured, never an interpolation): q=100 is the maximum."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def percentile_ms(seconds: Sequence[float], q: float) -> int | None:
    """The q-th percentile of durations in seconds, as whole milliseconds (None without values)."""
    value = percentile(seconds, q)
    return None if value is None else round(value * 1000)
