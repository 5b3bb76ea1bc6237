"""The peers the benchmark serves the same model.pt with: the Flask baseline (what a tutorial
writes, scripts/baseline_flask.py) and LitServe (what users leaving TorchServe pick,
scripts/baseline_litserve.py), each on a free port in its own process group."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from handler.settings import DEFAULTS
from service.bench.load import Cell, Plan, Target, measure
from service.local.torchserve import free_port
from service.names import ROOT
from service.processes import stop_group

FLASK_BASELINE = ROOT / "scripts" / "baseline_flask.py"
LITSERVE_BASELINE = ROOT / "scripts" / "baseline_litserve.py"
# LitServe configs tried, the best per concurrency level counts: (label, workers, threads each, max batch).
LITSERVE_CONFIGS = (("2 workers x 1 thread, batch 4", 2, 1, 4), ("1 worker x 2 threads, batch 8", 1, 2, 8))
LITSERVE = "LitServe"


def wait_for(port: int, path: str, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start; see {log}")
        time.sleep(0.3)


def start(command: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, port


def peer_cells(system: str, command: list[str], health: str, url_path: str, log: Path, plan: Plan) -> list[Cell]:
    """Start the peer, send each mix once off the clock, measure, stop it."""
    process, port = start(command, log)
    try:
        wait_for(port, health, process, log, system)
        for body, content_type in plan.mixes.values():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("POST", url_path, body=body, headers={"Content-Type": content_type})
            conn.getresponse().read()
        target = Target(f"http://127.0.0.1:{port}{url_path}", {}, os.getpgid(process.pid))
        return measure(system, target, plan)
    finally:
        stop_group(process.pid, 10)


def flask_cells(model_file: Path, log_dir: Path, plan: Plan) -> list[Cell]:
    """The Flask baseline on a free port, answering the handler's default top-k."""
    command = [sys.executable, str(FLASK_BASELINE), "--model", str(model_file), "--topk", str(DEFAULTS.topk)]
    return peer_cells("Flask baseline", command, "/ping", "/predict", log_dir / "flask.log", plan)


def as_form_upload(mixes: dict) -> dict[str, tuple[bytes, str]]:
    """Each mix as a multipart upload in field "file" (LitServe reads forms), encoded once."""
    forms = {}
    for name, (data, content_type) in mixes.items():
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        forms[name] = (head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")
    return forms


def litserve_cells(model_file: Path, log_dir: Path, plan: Plan) -> list[Cell]:
    """LitServe in each of LITSERVE_CONFIGS; the cells are labelled with the config."""
    cells = []
    for label, workers, threads, batch in LITSERVE_CONFIGS:
        command = [
            sys.executable, str(LITSERVE_BASELINE), "--model", str(model_file), "--topk", str(DEFAULTS.topk),
            *("--workers", str(workers), "--threads", str(threads), "--batch", str(batch)),
        ]
        system = f"{LITSERVE} ({label})"
        cells += peer_cells(system, command, "/health", "/predict", log_dir / f"litserve-{workers}.log",
                            plan.with_mixes(as_form_upload(plan.mixes)))
    return cells
