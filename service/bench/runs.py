"""The two benchmark runs: the main table (limits per runtime, served cells, LitServe and Flask beside
them, agreement of the fast opt-ins, targets) and the server-config sweep. Each starts everything it
measures in `work` and stops it again."""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from handler.model_card import MODEL_FILE
from service.archive.agreement import Agreement, int8_agreement
from service.bench.limit import Limit, in_process_limit
from service.bench.load import Cell, Plan
from service.bench.peers import flask_cells, litserve_cells
from service.bench.profile import profile
from service.bench.report import SMALL, SYSTEMS, evaluate, loadavg, machine
from service.bench.systems import build_archives, extracted_model_dir, image_mixes, torchserve_cells
from service.names import MODEL_CONFIG

LEVELS = (1, 4, 16)


@dataclass(frozen=True)
class BenchOptions:
    duration: float = 5.0  # measured seconds per cell
    warm: float = 1.5  # unmeasured seconds before each cell
    limit_seconds: float = 2.0  # per in-process limit measurement (5 runtimes: keeps make bench under 10 minutes)
    levels: tuple[int, ...] = LEVELS  # concurrency levels
    int8: bool = True
    runtimes: bool = True  # onnxruntime, openvino (fp32, and bf16 where the CPU has it)
    flask: bool = True
    litserve: bool = True
    busy: bool = True  # the cells beside a busy program
    ts_options: dict[str, str] = field(default_factory=dict)  # config.properties overrides to try
    only: tuple[str, ...] = ()  # sweep: only these config numbers

    def plan(self, mixes: dict[str, tuple[bytes, str]]) -> Plan:
        return Plan(mixes, self.levels, self.duration, self.warm)


# Archive variants measured on every image mix; the others on the small JPEG only (run time).
EVERY_MIX = ("fp32",)


def mixes_for(variant: str, mixes: dict) -> dict:
    return mixes if variant in EVERY_MIX else {SMALL: mixes[SMALL]}


def measure_limits(dirs: dict[str, Path], mixes: dict, batch: int, seconds: float) -> list[Limit]:
    limits = []
    for name, model_dir in dirs.items():
        limits += in_process_limit(model_dir, name, mixes_for(name, mixes), [1, 2, 4, batch], seconds)
    for x in limits:
        print(
            f"  limit {x.model} {x.mix:<18} {x.images_per_s:6.1f} images/s ({x.how}, batch {x.batch}), "
            f"single image {x.single_image_ms:.1f} ms",
            flush=True,
        )
    return limits


def measure_agreement(dirs: dict[str, Path]) -> dict[str, Agreement]:
    """The opt-ins that change answers (int8, bf16) against the fp32 TorchScript archive."""
    agreements = {}
    for name in ("int8", "openvino-bf16"):
        if name in dirs:
            agreements[name] = int8_agreement(dirs["fp32"], dirs[name])
            print(f"  {name}: {agreements[name].summary()}", flush=True)
    return agreements


def served_cells(stores: dict[str, Path], fp32_dir: Path, work: Path, mixes: dict, o: BenchOptions) -> list[Cell]:
    torch.set_num_threads(1)  # the load generator shares the machine; keep this process lean
    cells: list[Cell] = []
    for name, store in stores.items():
        if name not in SYSTEMS:  # measured in process only
            continue
        print(f"{SYSTEMS[name]}...", flush=True)
        beside_busy = (1, 4) if name == "fp32" and o.busy else ()
        plan = o.plan(mixes_for(name, mixes))
        cells += torchserve_cells(SYSTEMS[name], store, work / f"run-{name}", plan, beside_busy, o.ts_options)
    small = o.plan({SMALL: mixes[SMALL]})
    if o.litserve:
        print("LitServe...", flush=True)
        cells += litserve_cells(fp32_dir / MODEL_FILE, work, small)
    if o.flask:
        print("Flask baseline...", flush=True)
        cells += flask_cells(fp32_dir / MODEL_FILE, work, small)
    return cells


def variants(o: BenchOptions) -> tuple[str, ...]:
    names = ["fp32"] + ["int8"] * o.int8
    return (*names, *(("onnxruntime", "openvino", "openvino-bf16") if o.runtimes else ()))


def run_bench(o: BenchOptions, work: Path) -> dict:
    started = time.perf_counter()
    report: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "make bench" if os.environ.get("MAKELEVEL") else "python scripts/bench.py",
        "seconds": o.duration,
        "warm": o.warm,
    }
    model_config = yaml.safe_load(MODEL_CONFIG.read_text())
    report["model_config"] = {k: v for k, v in model_config.items() if k != "responseTimeout"}
    print("building archives...", flush=True)
    stores = build_archives(work / "store", model_config, variants(o))
    mixes = image_mixes()
    dirs = {name: extracted_model_dir(store, work / f"model-{name}") for name, store in stores.items()}
    print("in-process limit...", flush=True)
    limits = measure_limits(dirs, mixes, int(model_config.get("batchSize", 1)), o.limit_seconds)
    agreements = measure_agreement(dirs)
    cells = served_cells(stores, dirs["fp32"], work, mixes, o)
    report["machine"]["loadavg_after"] = loadavg()
    report["limits"] = [asdict(x) for x in limits]
    report["cells"] = [asdict(c) for c in cells]
    report["agreement"] = {name: a.to_dict() for name, a in agreements.items()}
    report["targets"] = evaluate(cells, limits, agreements)
    report["run_time_s"] = time.perf_counter() - started
    return report


PROFILED = ("fp32", "onnxruntime")  # TorchScript and the recommended runtime


def run_profile(o: BenchOptions, work: Path, seconds: float = 10.0) -> dict:
    """Where a request's time goes at 1 and 4 clients (small JPEG), per profiled runtime."""
    started, before = time.perf_counter(), machine()
    model_config = yaml.safe_load(MODEL_CONFIG.read_text())
    stores = build_archives(work / "store", model_config, PROFILED)
    body, content_type = image_mixes()[SMALL]
    torch.set_num_threads(1)
    runs = {}
    for name, store in stores.items():
        print(f"profiling {SYSTEMS[name]}...", flush=True)
        runs[SYSTEMS[name]] = profile(store, work / f"profile-{name}", body, content_type, (1, 4), seconds)
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**before, "loadavg_after": loadavg()},
        "model_config": {k: v for k, v in model_config.items() if k != "responseTimeout"},
        "seconds": seconds,
        "runs": runs,
        "run_time_s": time.perf_counter() - started,
    }


def server_config(workers: int, batch: int, delay: int, threads: str = "auto", **handler) -> dict:
    return {
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": batch,
        "maxBatchDelay": delay,
        "handler": {"intra_op_threads": threads, **handler},
    }


# (label, model-config overrides). TorchServe 0.12 treats maxBatchDelay 0 as unset (100 ms), so 1 is the minimum.
SWEEP = [
    ("2 workers x 1 thread, batch 1", server_config(2, 1, 1)),
    ("2 workers x 1 thread, batch 4, delay 1", server_config(2, 4, 1)),
    ("2 workers x 1 thread, batch 4, delay 5", server_config(2, 4, 5)),
    ("2 workers x 1 thread, batch 8, delay 1", server_config(2, 8, 1)),
    ("1 worker x 2 threads, batch 4, delay 1", server_config(1, 4, 1)),
    ("2 workers sharing cores, batch 1", server_config(2, 1, 1, "shared")),
    ("2 workers sharing cores, batch 4, delay 1", server_config(2, 4, 1, "shared")),
    ("2 workers sharing cores, batch 8, delay 1", server_config(2, 8, 1, "shared")),
    ("2 workers sharing cores, batch 8, delay 5", server_config(2, 8, 5, "shared")),
    ("2 workers x 1 thread, batch 4, delay 1, not optimized", server_config(2, 4, 1, optimize=False)),
]


def sweep_config(base: dict, overrides: dict) -> dict:
    """The project's model-config.yaml with one sweep row's workers, batching and handler settings."""
    config = {k: v for k, v in base.items() if k not in ("minWorkers", "maxWorkers")}
    config.update({k: v for k, v in overrides.items() if k != "handler"})
    config["handler"] = {**base.get("handler", {}), **overrides.get("handler", {})}
    return config


def run_sweep(o: BenchOptions, work: Path) -> dict:
    started = time.perf_counter()
    base = yaml.safe_load(MODEL_CONFIG.read_text())
    mixes = {k: v for k, v in image_mixes().items() if k.startswith("small")}
    rows = []
    for i, (label, overrides) in enumerate(SWEEP):
        if o.only and str(i) not in o.only:
            continue
        print(f"[{i}] {label}", flush=True)
        store = build_archives(work / f"sweep-{i}", sweep_config(base, overrides))["fp32"]
        run_dir = work / f"sweep-run-{i}"
        cells = torchserve_cells(label, store, run_dir, o.plan(mixes), (), o.ts_options)
        rows += [{"config": label, **asdict(c)} for c in cells]
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": rows,
        "seconds": o.duration,
        "run_time_s": time.perf_counter() - started,
    }
    report["machine"]["loadavg_after"] = loadavg()
    return report
