"""Overload soak: measure capacity, hold about twice that for a while, check the service comes back.

  python scripts/soak.py                      # own TorchServe on free ports from model_store/ (make soak)
  python scripts/soak.py --duration 30        # shorter
  python scripts/soak.py --run-dir var        # against a running server (make serve)

Loopback only. Phases:
  1. capacity: `--clients` closed-loop clients for `--measure` seconds -> requests/s and latency;
  2. overload: open loop at `--factor` x capacity for `--duration` seconds; every request must get
     an HTTP answer (200, or 503 when the queue is full), none may hang past `--timeout`;
  3. recovery: once the load stops, one client again -> latency back near the baseline.
Reports worker PIDs and RSS before and after, and writes the figures as JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.client import TorchServeClient  # noqa: E402
from service.photos import grace_hopper  # noqa: E402
from scripts.serve import MODEL_STORE, TorchServe, server_endpoints  # noqa: E402

MODEL = "resnet18"


def percentile(values: list[float], q: float) -> int | None:
    """The q-quantile in milliseconds, None without values."""
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000)


def workers(client: TorchServeClient, model: str) -> dict[int, int]:
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
    """Sends one image over and over; records each answer's status and latency."""

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

    def closed_loop(self, clients: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds

        def loop() -> None:
            while time.monotonic() < deadline:
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
            "latency_200_ms": {"p50": percentile(ok, 0.5), "p95": percentile(ok, 0.95), "max": percentile(ok, 1)},
            "latency_503_ms": {"p50": percentile(shed, 0.5), "max": percentile(shed, 1)},
            "unanswered": sum(not isinstance(s, int) for _, s, _ in rows),
        }


def soak(
    client: TorchServeClient,
    model: str = MODEL,
    duration: float = 180,
    factor: float = 2.0,
    measure: float = 10,
    clients: int = 8,
    timeout: float = 60,
    log=print,
) -> dict:
    image = grace_hopper().read_bytes()
    before = workers(client, model)
    log(f"workers before: {({pid: f'{rss / 2**20:.0f} MiB' for pid, rss in before.items()})}")

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
    end = workers(client, model)
    log(f"workers after: {({pid: f'{rss / 2**20:.0f} MiB' for pid, rss in end.items()})}")
    return {
        "model": model,
        "single_client": single,
        "capacity": {**capacity, "clients": clients},
        "overload": held,
        "recovery": {**recovered, "measured_from_s_after_load": round(recovery_started - started - duration, 1)},
        "workers_before": {str(p): round(r / 2**20, 1) for p, r in before.items()},
        "workers_after": {str(p): round(r / 2**20, 1) for p, r in end.items()},
        "workers_unchanged": set(before) == set(end),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, help="a running server's run directory (default: start our own)")
    p.add_argument("--model-store", type=Path, default=MODEL_STORE)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--duration", type=float, default=180, help="seconds of overload (default 180)")
    p.add_argument("--factor", type=float, default=2.0, help="offered load / measured capacity (default 2)")
    p.add_argument("--measure", type=float, default=10, help="seconds to measure capacity (default 10)")
    p.add_argument("--clients", type=int, default=8, help="closed-loop clients for the capacity measurement")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)

    server = None
    if args.run_dir:
        endpoints = server_endpoints(args.run_dir)
        if endpoints is None:
            print(f"no server config in {args.run_dir}", file=sys.stderr)
            return 2
        for url in (endpoints.inference, endpoints.management):
            if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
                print(f"soak runs against loopback only, not {url}", file=sys.stderr)
                return 2
        client = TorchServeClient(endpoints, key_file=args.run_dir / "key_file.json")
    else:
        import tempfile

        server = TorchServe.on_free_ports(Path(tempfile.mkdtemp(prefix="soak-")), args.model_store)
        server.start()
    try:
        if server:
            server.wait_ready()
            client = server.client()
        figures = soak(client, args.model, args.duration, args.factor, args.measure, args.clients)
    finally:
        if server:
            server.stop()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["overload"]["unanswered"] == 0 and figures["workers_unchanged"]
    print("soak passed" if ok else "soak FAILED: requests without an answer or workers replaced")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
