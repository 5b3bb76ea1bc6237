"""The systems under test and their inputs: random-weights archives served by TorchServe, the
Flask baseline (scripts/baseline_flask.py), the image mixes, and busy programs beside them."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import yaml

from handler.cores import available_cores
from handler.settings import DEFAULTS
from service.archive import BuildRequest, build
from service.bench.load import Cell, Target, drive, measure
from service.names import DEFAULT_MODEL, ROOT
from service.photos import grace_hopper, phone_photo_jpeg, photos
from service.processes import stop_group
from service.server import TorchServe, free_port

FLASK_BASELINE = ROOT / "scripts" / "baseline_flask.py"
JIT_WARM_S = 12.0  # unmeasured mixed load on each server before its first cell


def image_mixes() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type): a ~0.3 MP JPEG, a 12 MP phone JPEG made now, a PNG."""
    return {
        "small JPEG 0.3 MP": (grace_hopper().read_bytes(), "image/jpeg"),
        "12 MP JPEG": (phone_photo_jpeg(12.0), "image/jpeg"),
        "PNG 0.26 MP": (photos()["astronaut"].read_bytes(), "image/png"),
    }


def build_archives(store: Path, model_config: dict, int8: bool = True) -> dict[str, Path]:
    """Random-weights fp32 (and int8) archives with the given model-config.yaml; one store each.
    Speed does not depend on weight values."""
    config_file = store / "model-config.yaml"
    store.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(model_config))
    stores = {}
    for name, quantize in [("fp32", None), ("int8", "int8")][: 2 if int8 else 1]:
        out = store / name
        build(
            BuildRequest(random_weights=True, export_path=out, model_config=config_file, force=True, quantize=quantize)
        )
        stores[name] = out
    return stores


def extracted_model_dir(store: Path, into: Path) -> Path:
    with zipfile.ZipFile(store / f"{DEFAULT_MODEL}.mar") as z:
        z.extractall(into)
    return into


def busy_programs(n: int) -> list[subprocess.Popen]:
    """n single-threaded busy loops: another program on the box that wants whole cores."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure_beside_busy(system: str, target: Target, mixes: dict, levels, seconds: float, warm: float) -> list[Cell]:
    """The first mix again while busy loops hold all cores but one (the worker's threads must step
    back from them, handler/cores.py)."""
    n = max(1, available_cores() - 1)
    small = dict(list(mixes.items())[:1])
    busy = busy_programs(n)
    try:
        label = f"{system} beside {n} busy process{'es' if n > 1 else ''}"
        return measure(label, target, small, levels, seconds, warm)
    finally:
        for process in busy:
            process.kill()
            process.wait()


def torchserve_cells(
    system: str,
    store: Path,
    run_dir: Path,
    mixes: dict,
    levels,
    seconds: float,
    warm: float,
    beside_busy: tuple[int, ...] = (),
    ts_options: dict[str, str] | None = None,
) -> list[Cell]:
    """The server's cells; then, at the `beside_busy` levels, the first mix beside busy programs.
    `ts_options`: config.properties overrides to try."""
    server = TorchServe.on_free_ports(run_dir, store, **(ts_options or {}))
    server.start()
    try:
        models = server.wait_ready()
        server.warm_up(models)
        client = server.client()
        target = Target(
            f"{server.endpoints.inference}/predictions/{models[0]}",
            {"Authorization": f"Bearer {client.keys['inference']}"},
            os.getpgid(server.process.pid),
        )
        for body, content_type in mixes.values():  # every decode path once, off the clock
            headers = {**target.headers, "Content-Type": content_type}
            client.session.post(target.url, data=body, headers=headers, timeout=120)
        # A served model runs for hours: let the JVM compile its hot paths before measuring (the
        # frontend's CPU per request halves over the first ~20 s; measured in docs/PERFORMANCE.md).
        for body, content_type in mixes.values():
            drive(target, body, content_type, 4, JIT_WARM_S / len(mixes), 0.0)
        cells = measure(system, target, mixes, levels, seconds, warm)
        if beside_busy:
            cells += measure_beside_busy(system, target, mixes, beside_busy, seconds, warm)
        return cells
    finally:
        server.stop()


def wait_for_flask(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Flask baseline did not start; see {log}")
            time.sleep(0.3)


def flask_cells(model_file: Path, log_dir: Path, mixes: dict, levels, seconds: float, warm: float) -> list[Cell]:
    """The Flask baseline on a free port, answering the handler's default top-k."""
    port = free_port()
    command = [sys.executable, str(FLASK_BASELINE), "--model", str(model_file), "--topk", str(DEFAULTS.topk)]
    log = log_dir / "flask.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_flask(port, process, log)
        for body, content_type in mixes.values():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            conn.getresponse().read()
        target = Target(f"http://127.0.0.1:{port}/predict", {}, os.getpgid(process.pid))
        return measure("Flask baseline", target, mixes, levels, seconds, warm)
    finally:
        stop_group(process.pid, 10)
