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
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psutil
import requests

from service.bench.stats import percentile_ms
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


class Load:
    """Sends one image over and over; records each answer's status and latency, and the refusals' messages.
    The soak's and the fault tests' load (the benchmark's own, load.ClosedLoop, is leaner: http.client and
    no bookkeeping per request, because its per-request cost is part of what it measures)."""

    def __init__(self, client: TorchServeClient, model: str, image: bytes, timeout: float) -> None:
        self.url = f"{client.endpoints.inference}/predictions/{model}"
        self.headers = {"Authorization": f"Bearer {client.keys.get('inference', '')}", "Content-Type": "image/jpeg"}
        self.image = image
        self.timeout = timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.results: list[tuple[float, int | str, float]] = []  # (sent at, status or exception, seconds)
        self.messages: Counter[str] = Counter()

    def one(self) -> None:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        sent = time.monotonic()
        try:
            response = session.post(self.url, data=self.image, headers=self.headers, timeout=self.timeout)
            status: int | str = response.status_code
            if status != 200:
                try:
                    message = response.json().get("message", "")
                except ValueError:
                    message = response.text[:200]
                with self.lock:
                    self.messages[f"{status}: {message}"] += 1
        except requests.RequestException as e:
            status = type(e).__name__
        with self.lock:
            self.results.append((sent, status, time.monotonic() - sent))

    def closed_loop(self, clients: int, seconds: float = float("inf"), until: threading.Event | None = None) -> None:
        """`clients` clients each sending the next request when the last is answered, for `seconds` or
        until `until` is set (the fault tests run it in the background while they break things)."""
        deadline = time.monotonic() + seconds

        def loop() -> None:
            while time.monotonic() < deadline and not (until and until.is_set()):
                self.one()

        threads = [threading.Thread(target=loop) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def open_loop(self, rate: float, seconds: float, max_in_flight: int) -> int:
        """`rate` requests/s at fixed intervals whatever the answers; returns how many were sent."""
        sent = 0
        start = time.monotonic()
        with ThreadPoolExecutor(max_in_flight) as pool:
            while (now := time.monotonic()) < start + seconds:
                due = int((now - start) * rate) + 1
                while sent < due:
                    pool.submit(self.one)
                    sent += 1
                time.sleep(min(0.005, 1 / rate))
        return sent

    def summary(self, since: float = 0.0) -> dict:
        rows = [r for r in self.results if r[0] >= since]
        statuses = Counter(str(s) for _, s, _ in rows)
        ok = [d for _, s, d in rows if s == 200]
        shed = [d for _, s, d in rows if s == 503]
        span = (max(t + d for t, _, d in rows) - min(t for t, _, _ in rows)) if rows else 0.0
        return {
            "requests": len(rows),
            "statuses": dict(statuses),
            "answered_200_per_s": round(len(ok) / span, 1) if span else 0.0,
            "latency_200_ms": {"p50": percentile_ms(ok, 50), "p95": percentile_ms(ok, 95),
                               "max": percentile_ms(ok, 100)},
            "latency_503_ms": {"p50": percentile_ms(shed, 50), "max": percentile_ms(shed, 100)},
            "unanswered": sum(not isinstance(s, int) for _, s, _ in rows),
        }


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
