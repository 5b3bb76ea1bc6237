"""The one load generator: requests on keep-alive connections (`Sender`), driven closed-loop with the
CPU each side used (`ClosedLoop`, the benchmark) or closed- and open-loop with every answer recorded
(`Load`, the soak and the fault tests).

One thread and one keep-alive connection per client, request bytes encoded once. CPU is process CPU
time / wall time: the server's whole process group, the load generator itself, and everything else on
the machine ("other"), so a noisy run shows.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import psutil

from service.bench.stats import percentile, percentile_ms
from service.client.api import TorchServeClient


@dataclass(frozen=True)
class Target:
    """Where the load goes: the prediction URL, its headers, and the server's process group."""

    url: str
    headers: dict[str, str]
    pgid: int


@dataclass
class Cell:
    system: str
    mix: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cores: float
    loadgen_cores: float
    other_cores: float
    frontend_cores: float = 0.0  # of server_cores: TorchServe's Java frontend


def group_cpu(pgid: int) -> tuple[float, float]:
    """CPU seconds of a process group so far: (all of it, its Java processes)."""
    total = java = 0.0
    for p in psutil.process_iter(["name"]):
        try:
            if os.getpgid(p.pid) == pgid:
                t = p.cpu_times()
                used = t.user + t.system + t.children_user + t.children_system
                total += used
                java += used if p.info["name"] == "java" else 0.0
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return total, java


def machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def cpu_sample(pgid: int) -> tuple[float, float, float, float]:
    """CPU seconds so far: (server group, its Java frontend, this load generator, the whole machine)."""
    return (*group_cpu(pgid), sum(psutil.Process().cpu_times()[:2]), machine_busy())


def _ms(values: list[float], q: float) -> float:
    value = percentile(values, q)
    return float("nan") if value is None else value * 1000


class Sender:
    """POSTs one body to one URL on this thread's keep-alive connection; a broken connection is replaced."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes, timeout: float = 120) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parsed.hostname, parsed.port, parsed.path
        self.headers, self.body, self.timeout = headers, body, timeout
        self.local = threading.local()

    def close(self) -> None:
        """This thread's connection."""
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
            self.local.conn = None

    def send(self) -> tuple[int | str, bytes]:
        """(status, body) of one answer, or (the exception's name, b"") when none came."""
        conn = getattr(self.local, "conn", None) or http.client.HTTPConnection(self.host, self.port,
                                                                               timeout=self.timeout)
        self.local.conn = conn
        try:
            conn.request("POST", self.path, body=self.body, headers=self.headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.local.conn = None
            return type(e).__name__, b""


class ClosedLoop:
    """`concurrency` clients, each sends its next request when its last answer is in.
    Completions inside the measurement window count; the window opens after the warm-up."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes, concurrency: int) -> None:
        self.sender = Sender(url, headers, body)
        self.stop_at = float("inf")
        self.window = (float("inf"), float("inf"))
        self.latencies: list[list[float]] = [[] for _ in range(concurrency)]
        self.errors = [0] * concurrency
        self.barrier = threading.Barrier(concurrency + 1)

    def _client(self, i: int) -> None:
        self.barrier.wait()
        while (started := time.perf_counter()) < self.stop_at:
            ok = self.sender.send()[0] == 200
            done = time.perf_counter()
            if self.window[0] <= done <= self.window[1]:
                if ok:
                    self.latencies[i].append(done - started)
                else:
                    self.errors[i] += 1
        self.sender.close()

    def run(self, seconds: float, warm: float, pgid: int) -> dict:
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(len(self.errors))]
        for t in threads:
            t.start()
        self.barrier.wait()
        opens = time.perf_counter() + warm
        self.window = (opens, float("inf"))
        time.sleep(warm)
        cpu0 = cpu_sample(pgid)
        self.window = (opens, opens + seconds)
        self.stop_at = self.window[1]
        time.sleep(max(0.0, self.window[1] - time.perf_counter()))
        cpu1 = cpu_sample(pgid)
        wall = time.perf_counter() - opens
        for t in threads:
            t.join(timeout=180)
        done = [x for per in self.latencies for x in per]
        server, frontend, loadgen, busy = (b - a for a, b in zip(cpu0, cpu1, strict=True))
        return {
            "requests_per_s": len(done) / seconds,
            "p50_ms": _ms(done, 50),
            "p95_ms": _ms(done, 95),
            "p99_ms": _ms(done, 99),
            "errors": sum(self.errors),
            "requests": len(done),
            "server_cores": server / wall,
            "loadgen_cores": loadgen / wall,
            "other_cores": max(0.0, busy - server - loadgen) / wall,
            "frontend_cores": frontend / wall,
        }


def drive(target: Target, body: bytes, content_type: str, concurrency: int, seconds: float, warm: float) -> dict:
    """One closed-loop run against the target; the figures of one Cell."""
    headers = {**target.headers, "Content-Type": content_type}
    return ClosedLoop(target.url, headers, body, concurrency).run(seconds, warm, target.pgid)


@dataclass(frozen=True)
class Plan:
    """What one system is measured on: each image mix (name -> (body, content type)) at each
    concurrency level, for `seconds` after `warm` seconds off the clock."""

    mixes: dict[str, tuple[bytes, str]]
    levels: tuple[int, ...]
    seconds: float
    warm: float

    def first_mix(self, levels: tuple[int, ...] | None = None) -> Plan:
        """The first mix alone (at other levels, if given)."""
        return replace(self, mixes=dict(list(self.mixes.items())[:1]), levels=levels or self.levels)

    def with_mixes(self, mixes: dict[str, tuple[bytes, str]]) -> Plan:
        return replace(self, mixes=mixes)


def measure(system: str, target: Target, plan: Plan) -> list[Cell]:
    """One cell per image mix and concurrency level, printed as it is measured."""
    cells = []
    for mix, (body, content_type) in plan.mixes.items():
        for level in plan.levels:
            cell = Cell(system, mix, level, **drive(target, body, content_type, level, plan.seconds, plan.warm))
            cells.append(cell)
            print(
                f"  {system:<22} {mix:<18} c={level:<3} {cell.requests_per_s:7.1f} req/s  p50 {cell.p50_ms:6.1f}"
                f"  p99 {cell.p99_ms:6.1f} ms  err {cell.errors}  server {cell.server_cores:.2f}"
                f" (java {cell.frontend_cores:.2f})"
                f"  loadgen {cell.loadgen_cores:.2f}  other {cell.other_cores:.2f} cores",
                flush=True,
            )
    return cells


class Load:
    """One image over and over to a model's predictions, every answer recorded: (sent at, status or the
    exception's name, seconds), and the refusals' messages. The soak's and the fault tests' load."""

    def __init__(self, client: TorchServeClient, model: str, image: bytes, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {client.keys.get('inference', '')}", "Content-Type": "image/jpeg"}
        self.sender = Sender(f"{client.endpoints.inference}/predictions/{model}", headers, image, timeout)
        self.lock = threading.Lock()
        self.results: list[tuple[float, int | str, float]] = []
        self.messages: Counter[str] = Counter()

    def one(self) -> None:
        sent = time.monotonic()
        status, body = self.sender.send()
        with self.lock:
            self.results.append((sent, status, time.monotonic() - sent))
            if isinstance(status, int) and status != 200:
                self.messages[f"{status}: {refusal_message(body)}"] += 1

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


def refusal_message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")
