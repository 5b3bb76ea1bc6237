"""TorchServe's ceiling for this work: the same server, batching and clients, but a handler whose
work per image is a fixed CPU time equal to the recommended runtime's in-process cost (cores /
in-process limit) and nothing else. What it loses against cores / cost is TorchServe's frontend,
worker protocol and closed-loop round trips, not the handler (python scripts/bench.py --ceiling)."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import torch
import yaml

from handler.cores import available_cores
from service.archive.pack import run_archiver
from service.bench.limit import in_process_limit
from service.bench.load import Cell
from service.bench.report import SMALL, loadavg, machine
from service.bench.runs import BenchOptions, server_config, sweep_config
from service.bench.systems import build_archives, extracted_model_dir, image_mixes, torchserve_cells
from service.names import DEFAULT_MODEL, MODEL_CONFIG

RUNTIME = "onnxruntime"  # the runtime docs/PERFORMANCE.md recommends
BATCH_SIZES = (8, 2)  # the default, and the most a worker can get when 4 clients share 2 workers evenly
HANDLER = Path(__file__).with_name("fixed_cost_handler.py")
CEILING_BEGIN = "<!-- ceiling:begin (scripts/bench.py --ceiling writes this block) -->"
CEILING_END = "<!-- ceiling:end -->"


def fixed_cost_archive(store: Path, model_config: dict) -> Path:
    store.mkdir(parents=True, exist_ok=True)
    config_file = store / "model-config.yaml"
    config_file.write_text(yaml.safe_dump(model_config))
    run_archiver(DEFAULT_MODEL, "1.0", HANDLER, config_file, store)
    return store


def row(system: str, batch: int, ideal: float, cell: Cell) -> dict:
    idle = max(0.0, available_cores() - cell.server_cores - cell.loadgen_cores - cell.other_cores)
    return {
        "system": system,
        "batch": batch,
        "clients": cell.concurrency,
        "req_s": cell.requests_per_s,
        "of_ideal": cell.requests_per_s / ideal,
        "p50_ms": cell.p50_ms,
        "server_cores": cell.server_cores,
        "frontend_cores": cell.frontend_cores,
        "idle_cores": idle,
        "other_cores": cell.other_cores,
    }


def run_ceiling(o: BenchOptions, work: Path) -> dict:
    started, before = time.perf_counter(), machine()
    base = yaml.safe_load(MODEL_CONFIG.read_text())
    small = {SMALL: image_mixes()[SMALL]}
    store = build_archives(work / "store", base, (RUNTIME,))[RUNTIME]
    model_dir = extracted_model_dir(store, work / "model")
    limit = in_process_limit(model_dir, RUNTIME, small, [1, 2, 4, 8], o.limit_seconds)[0]
    cpu_ms = available_cores() * 1000 / limit.images_per_s
    print(
        f"  in-process limit {limit.images_per_s:.1f} images/s ({limit.how}, batch {limit.batch}): "
        f"{cpu_ms:.2f} ms of one core per image",
        flush=True,
    )
    torch.set_num_threads(1)
    rows = []
    for batch in BATCH_SIZES:
        config = sweep_config(base, server_config(available_cores(), batch, 1, "shared"))
        real = build_archives(work / f"real-{batch}", config, (RUNTIME,))[RUNTIME]
        fixed = fixed_cost_archive(work / f"fixed-{batch}", {**config, "handler": {"cpu_ms_per_image": cpu_ms}})
        for system, archive in ((f"{RUNTIME} handler", real), ("fixed-cost handler", fixed)):
            print(f"{system}, batchSize {batch}...", flush=True)
            run_dir = work / f"run-{system[:5]}-{batch}"
            cells = torchserve_cells(system, archive, run_dir, o.plan(small))
            rows += [row(system, batch, limit.images_per_s, c) for c in cells]
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**before, "loadavg_after": loadavg()},
        "limit": {
            "images_per_s": limit.images_per_s,
            "how": limit.how,
            "batch": limit.batch,
            "per_batch": limit.per_batch,
            "parallel": limit.parallel,
        },
        "cpu_ms_per_image": cpu_ms,
        "rows": rows,
        "seconds": o.duration,
        "run_time_s": time.perf_counter() - started,
    }


def ceiling_markdown(report: dict) -> str:
    m, lim = report["machine"], report["limit"]
    lines = [
        CEILING_BEGIN,
        f"Measured {report['date']} (`python scripts/bench.py --ceiling`), {m['cpu']}, {m['cores']} cores "
        f"(flags: {' '.join(m.get('key_flags', []))}), "
        f"small JPEG, {report['seconds']:g} s per cell. In-process limit of {RUNTIME}: "
        f"{lim['images_per_s']:.1f} images/s ({lim['how']}, batch {lim['batch']}; per-core streams by batch: "
        + ", ".join(f"b{k}: {v:.1f}" for k, v in lim["parallel"].items())
        + f"), so the fixed-cost handler spends {report['cpu_ms_per_image']:.2f} ms of CPU per image.",
        "",
        "| handler | batchSize | clients | req/s | of the limit | p50 ms | server cores | of which frontend "
        "| idle cores | other cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['system']} | {r['batch']} | {r['clients']} | {r['req_s']:.1f} | {r['of_ideal']:.2f} "
            f"| {r['p50_ms']:.1f} "
            f"| {r['server_cores']:.2f} | {r['frontend_cores']:.2f} | {r['idle_cores']:.2f} | {r['other_cores']:.2f} |"
        )
    lines.append(CEILING_END)
    return "\n".join(lines)
