"""The systems under test and their inputs: random-weights archives (one per runtime and precision)
served by TorchServe, the image mixes, and busy programs beside them. The peers (Flask, LitServe)
are in peers.py."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from handler.cores import available_cores
from service.archive import BuildRequest, build
from service.archive.export import cpu_has_bf16
from service.bench.load import Cell, Plan, Target, drive, measure
from service.client.api import TorchServeClient
from service.local.torchserve import TorchServe
from service.names import DEFAULT_MODEL
from service.photos import grace_hopper, phone_photo_jpeg, photos

JIT_WARM_S = 12.0  # unmeasured mixed load on each server before its first cell


def image_mixes() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type): a ~0.3 MP JPEG, a 12 MP phone JPEG made now, a PNG."""
    return {
        "small JPEG 0.3 MP": (grace_hopper().read_bytes(), "image/jpeg"),
        "12 MP JPEG": (phone_photo_jpeg(12.0), "image/jpeg"),
        "PNG 0.26 MP": (photos()["astronaut"].read_bytes(), "image/png"),
    }


# Archive variants the benchmark builds: name -> BuildRequest fields. bf16 only where the CPU has it.
VARIANTS = {
    "fp32": {},
    "int8": {"quantize": "int8"},
    "onnxruntime": {"runtime": "onnxruntime"},
    "openvino": {"runtime": "openvino"},
    "openvino-bf16": {"runtime": "openvino", "precision": "bf16"},
}


def build_archives(store: Path, model_config: dict, variants: tuple[str, ...] = ("fp32",)) -> dict[str, Path]:
    """Random-weights archives of the given variants with the given model-config.yaml; one store
    each. Speed does not depend on weight values."""
    config_file = store / "model-config.yaml"
    store.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(model_config))
    stores = {}
    for name in variants:
        if name == "openvino-bf16" and not cpu_has_bf16():
            print("  (no bf16 on this CPU: no openvino-bf16 archive)", flush=True)
            continue
        out = store / name
        options = VARIANTS[name]
        build(BuildRequest(random_weights=True, export_path=out, model_config=config_file, force=True, **options))
        stores[name] = out
    return stores


def extracted_model_dir(store: Path, into: Path) -> Path:
    with zipfile.ZipFile(store / f"{DEFAULT_MODEL}.mar") as z:
        z.extractall(into)
    return into


def busy_programs(n: int) -> list[subprocess.Popen]:
    """n single-threaded busy loops: another program on the box that wants whole cores."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure_beside_busy(system: str, target: Target, plan: Plan) -> list[Cell]:
    """The first mix again while busy loops hold all cores but one (the worker's threads must step
    back from them, handler/cores.py)."""
    n = max(1, available_cores() - 1)
    busy = busy_programs(n)
    try:
        label = f"{system} beside {n} busy process{'es' if n > 1 else ''}"
        return measure(label, target, plan.first_mix())
    finally:
        for process in busy:
            process.kill()
            process.wait()


def ready_target(server: TorchServe) -> tuple[Target, TorchServeClient]:
    """Once the started server is READY and warmed up: its first model's predictions URL with the
    inference key (and the server's process group, whose CPU is measured), and its client."""
    models = server.wait_ready()
    server.warm_up(models)
    client = server.client()
    target = Target(
        f"{server.endpoints.inference}/predictions/{models[0]}",
        {"Authorization": f"Bearer {client.keys['inference']}"},
        os.getpgid(server.process.pid),
    )
    return target, client


def torchserve_cells(
    system: str,
    store: Path,
    run_dir: Path,
    plan: Plan,
    beside_busy: tuple[int, ...] = (),
    ts_options: dict[str, str] | None = None,
) -> list[Cell]:
    """The server's cells; then, at the `beside_busy` levels, the first mix beside busy programs.
    `ts_options`: config.properties overrides to try."""
    server = TorchServe.on_free_ports(run_dir, store, **(ts_options or {}))
    server.start()
    try:
        target, client = ready_target(server)
        for body, content_type in plan.mixes.values():  # every decode path once, off the clock
            headers = {**target.headers, "Content-Type": content_type}
            client.session.post(target.url, data=body, headers=headers, timeout=120)
        # A served model runs for hours: let the JVM compile its hot paths before measuring (the
        # frontend's CPU per request halves over the first ~20 s; measured in docs/PERFORMANCE.md).
        for body, content_type in plan.mixes.values():
            drive(target, body, content_type, 4, JIT_WARM_S / len(plan.mixes), 0.0)
        cells = measure(system, target, plan)
        if beside_busy:
            cells += measure_beside_busy(system, target, plan.first_mix(beside_busy))
        return cells
    finally:
        server.stop()
