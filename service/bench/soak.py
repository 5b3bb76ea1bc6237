"""Overload soak: measure capacity, hold about twice that for a while, check the service comes back.

Phases (scripts/soak.py is the command, tests/test_reliability.py runs a short one):
  1. capacity: closed-loop clients for a while -> requests/s and latency;
  2. overload: open loop at `factor` x capacity; every request must get an HTTP answer (200, or
     503 when the queue is full), none may hang past `timeout`;
  3. recovery: once the load stops, one client again -> latency back near the baseline.
Worker PIDs and RSS before and after tell whether a worker died or grew.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from service.bench.load import Load
from service.client.api import TorchServeClient
from service.names import DEFAULT_MODEL


def worker_memory(client: TorchServeClient, model: str) -> dict[int, int]:
    """PID -> RSS in bytes of each of the model's workers."""
    found = {}
    for version in client.describe_model(model).json():
        for w in version["workers"]:
            try:
                found[int(w["pid"])] = psutil.Process(int(w["pid"])).memory_info().rss
            except (psutil.Error, KeyError, ValueError):
                pass
    return found


def _mib(memory: dict[int, int]) -> dict[str, float]:
    return {str(pid): round(rss / 2**20, 1) for pid, rss in memory.items()}


@dataclass(frozen=True)
class SoakPlan:
    """The soak's phases: capacity measured for `measure` s with `clients` closed-loop clients, then
    `factor` times that rate offered for `duration` s, then recovery; `timeout` per request."""

    duration: float = 180
    factor: float = 2.0
    measure: float = 10
    clients: int = 8
    timeout: float = 60


def soak(client: TorchServeClient, image: bytes, plan: SoakPlan = SoakPlan(), model: str = DEFAULT_MODEL,
         log: Callable[[str], object] = print) -> dict:
    """The three phases against a running server; the figures as one JSON-ready dict."""
    duration, factor, measure, clients, timeout = plan.duration, plan.factor, plan.measure, plan.clients, plan.timeout
    before = worker_memory(client, model)
    log(f"workers before (MiB): {_mib(before)}")

    baseline = Load(client, model, image, timeout)
    baseline.closed_loop(1, min(5, measure))
    single = baseline.summary()
    capacity_load = Load(client, model, image, timeout)
    capacity_load.closed_loop(clients, measure)
    capacity = capacity_load.summary()
    rate = capacity["answered_200_per_s"]
    log(f"capacity: {rate} answers/s with {clients} clients (p50 {capacity['latency_200_ms']['p50']} ms); "
        f"one client alone: p50 {single['latency_200_ms']['p50']} ms")

    target = max(1.0, factor * rate)
    overload = Load(client, model, image, timeout)
    log(f"overload: {target:.0f} requests/s for {duration:.0f} s")
    started = time.monotonic()
    sent = overload.open_loop(target, duration, max_in_flight=256)
    held = overload.summary()
    held["sent"] = sent
    held["seconds"] = round(time.monotonic() - started, 1)
    held["offered_per_s"] = round(target, 1)
    held["error_messages"] = dict(overload.messages.most_common(5))
    log(f"overload result: {json.dumps(held)}")

    recovery_started = time.monotonic()
    after = Load(client, model, image, timeout)
    after.closed_loop(1, min(5, measure))
    recovered = after.summary()
    log(f"after the load: p50 {recovered['latency_200_ms']['p50']} ms, statuses {recovered['statuses']}")
    end = worker_memory(client, model)
    log(f"workers after (MiB): {_mib(end)}")
    return {
        "model": model,
        "single_client": single,
        "capacity": {**capacity, "clients": clients},
        "overload": held,
        "recovery": {**recovered, "measured_from_s_after_load": round(recovery_started - started - duration, 1)},
        "workers_before": _mib(before),
        "workers_after": _mib(end),
        "workers_unchanged": set(before) == set(end),
    }


def passed(figures: dict) -> bool:
    """Every overload request answered, and the same workers at the end as at the start."""
    return figures["overload"]["unanswered"] == 0 and figures["workers_unchanged"]
