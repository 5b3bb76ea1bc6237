"""Where one served request's time goes (scripts/bench.py --profile): the client's view, the
frontend's own timings, the handler's batch log and a sampling profile of every worker.

For each concurrency level, over one measured window:
- client: mean latency (closed loop: clients / throughput) and p50;
- frontend (TorchServe's Prometheus counters ts_inference_latency_microseconds and
  ts_queue_latency_microseconds, per request): total time inside the frontend, of which waiting in
  the model's queue;
- handler (model_log.log, one line per batch): batch sizes and time per batch; each request waits
  for its whole batch;
- workers (py-spy, sampled with idle frames, the request loop's thread): share of each worker's
  wall time in decode and preprocessing, the forward pass, top-k and JSON, logging, TorchServe's
  Python (protocol, metrics), and idle (waiting on the socket for the next batch: the model is
  idle then, unless the other worker runs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import requests

from service.bench.load import Target, drive
from service.bench.systems import ready_target
from service.local.torchserve import TorchServe

# Innermost-first markers in a sampled stack (py-spy "raw" lines: frames joined by ";") -> stage.
STAGES = (
    ("decode + preprocess", ("model_input", "decode_image", "to_tensor", "decode_for_model")),
    ("forward pass", ("inference (handler", "__call__ (handler/runtime.py", "__call__ (handler/onnx_runtime.py",
                      "__call__ (handler/openvino_runtime.py")),
    ("parse, top-k, JSON", ("parse_request", "postprocess (handler", "encode (handler", "top_k")),
    ("idle: waiting for the next batch", ("recv_into", "recv (", "_retrieve_buffer", "retrieve_msg")),
    ("logging", ("logging/__init__",)),
    ("TorchServe worker (protocol, metrics, logging)", ("ts/",)),
)
BATCH_LINE = re.compile(r"batch of (\d+): .* in ([\d.]+) ms")
FRONTEND = ("ts_inference_latency_microseconds", "ts_queue_latency_microseconds", "ts_inference_requests_total")


def frontend_counters(metrics_url: str) -> dict[str, float]:
    """The frontend's cumulative counters, summed over labels."""
    totals = dict.fromkeys(FRONTEND, 0.0)
    for line in requests.get(f"{metrics_url}/metrics", timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def batch_lines(log: Path, start: int) -> list[tuple[int, float]]:
    """(size, ms) of each batch logged after byte offset `start` of model_log.log."""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    return [(int(n), float(ms)) for n, ms in BATCH_LINE.findall(text)]


def worker_pids(pgid: int) -> list[int]:
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if os.getpgid(p.pid) == pgid and "model_service_worker" in " ".join(p.info["cmdline"] or []):
                pids.append(p.pid)
        except (psutil.Error, ProcessLookupError):
            pass
    return pids


def stage_of(stack: str) -> str:
    for stage, markers in STAGES:
        if any(marker in stack for marker in markers):
            return stage
    return "other Python"


def sample_workers(pids: list[int], seconds: float, out: Path) -> list[subprocess.Popen]:
    """py-spy on every worker for `seconds`, idle frames included (none if py-spy is missing)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return []
    return [
        subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "250", "--idle",
             "--nonblocking", "-f", "raw", "-o", str(out / f"spy-{pid}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


# The worker's main thread (TorchServe's request loop); other threads (e.g. the metrics flusher) idle.
MAIN_THREAD = "<module> (ts/model_service_worker.py"


def stage_shares(files: list[Path]) -> dict[str, float]:
    """Share of the main thread's samples per stage, over all workers."""
    counts: Counter[str] = Counter()
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit() and stack.startswith(MAIN_THREAD):
                counts[stage_of(stack)] += int(count)
    total = sum(counts.values())
    return {stage: n / total for stage, n in counts.most_common()} if total else {}


def profile_level(server: TorchServe, target: Target, body: bytes, content_type: str, level: int,
                  seconds: float, out: Path) -> dict:
    """One window at `level` clients: client, frontend, handler and worker-sample figures."""
    drive(target, body, content_type, level, 2.0, 0.0)  # settle at this level
    log = server.log_dir / "model_log.log"
    offset, before = log.stat().st_size, frontend_counters(server.endpoints.metrics)
    spies = sample_workers(worker_pids(target.pgid), seconds, out)
    result = drive(target, body, content_type, level, seconds, 0.0)
    for spy in spies:
        spy.wait(timeout=seconds + 60)
    time.sleep(0.5)  # the last batch lines reach the log
    after = frontend_counters(server.endpoints.metrics)
    delta = {k: after[k] - before[k] for k in FRONTEND}
    n = max(delta["ts_inference_requests_total"], 1.0)
    batches = batch_lines(log, offset)
    images = sum(size for size, _ in batches) or 1
    return {
        "clients": level,
        "requests_per_s": result["requests_per_s"],
        "client_mean_ms": level / max(result["requests_per_s"], 1e-9) * 1000,
        "client_p50_ms": result["p50_ms"],
        "frontend_ms": delta["ts_inference_latency_microseconds"] / n / 1000,
        "queue_ms": delta["ts_queue_latency_microseconds"] / n / 1000,
        "handler_ms_per_request": sum(size * ms for size, ms in batches) / images,
        "batch_sizes": dict(sorted(Counter(size for size, _ in batches).items())),
        "handler_busy_share": sum(ms for _, ms in batches) / 1000 / seconds,
        "worker_stages": stage_shares(sorted(out.glob("spy-*.txt"))) if spies else {},
        "sampled": bool(spies),
    }


def profile(store: Path, run_dir: Path, body: bytes, content_type: str, levels, seconds: float) -> list[dict]:
    """Serve the store's archive and profile each level in its own window."""
    server = TorchServe.on_free_ports(run_dir, store)
    server.start()
    try:
        target, _ = ready_target(server)
        drive(target, body, content_type, 4, 12.0, 0.0)  # the JVM compiles its hot paths
        rows = []
        for level in levels:
            out = run_dir / f"profile-c{level}"
            out.mkdir(parents=True, exist_ok=True)
            rows.append(profile_level(server, target, body, content_type, level, seconds, out))
            print(f"  c={level}: {rows[-1]}", flush=True)
        return rows
    finally:
        server.stop()
