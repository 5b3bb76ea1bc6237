"""The benchmark's Markdown tables (docs/PERFORMANCE.md) and JSON (docs/performance.json); the
targets are evaluated in targets.py."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import torch

from handler.cores import available_cores
from service.archive.export import BF16_FLAGS, cpu_flags
from service.bench.targets import REAL_MODEL_SECTION, SMALL, SYSTEMS, evaluate, variant_of
from service.names import ROOT

__all__ = ["SMALL", "SYSTEMS", "evaluate"]

DOC = ROOT / "docs" / "PERFORMANCE.md"
JSON_FILE = ROOT / "docs" / "performance.json"
BEGIN, END = "<!-- bench:begin (scripts/bench.py writes this block) -->", "<!-- bench:end -->"
PROFILE_BEGIN = "<!-- profile:begin (scripts/bench.py --profile writes this block) -->"
PROFILE_END = "<!-- profile:end -->"
SWEEP_BEGIN, SWEEP_END = "<!-- sweep:begin (scripts/bench.py --sweep writes this block) -->", "<!-- sweep:end -->"
# The CPU flags that decide the fast paths (recorded with every run; the full list is in the JSON).
KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", *BF16_FLAGS, "amx_tile", "amx_int8")


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict:
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "flags": sorted(flags),
        "key_flags": [f for f in KEY_FLAGS if f in flags],
        "cores": available_cores(),
        "platform": platform.platform(terse=True),
        "torch": torch.__version__,
        "loadavg_before": loadavg(),
    }


# ---------------------------------------------------------------- Markdown


def _header(report: dict) -> list[str]:
    m = report["machine"]
    return [
        BEGIN,
        f"Measured {report['date']} by `{report['command']}` on **{m['cpu']}, {m['cores']} cores** "
        f"(flags: {' '.join(m.get('key_flags', [])) or 'none of ' + ', '.join(KEY_FLAGS)}; "
        "all flags in docs/performance.json; "
        f"{m['platform']}; torch {m['torch']}). Load average before/after: {m['loadavg_before']} / "
        f"{m['loadavg_after']}; the `other` column is CPU used by other processes during each cell. "
        f"{report['seconds']:g} s per cell after {report['warm']:g} s warm-up; random-weights archives; "
        f"run time {report['run_time_s']:.0f} s.",
        "",
        f"Server config: `{json.dumps(report['model_config'], separators=(', ', ': '))}`",
    ]


def _limits_table(report: dict) -> list[str]:
    lines = [
        "",
        "### In-process limit (decode + preprocess + model, one process, all cores)",
        "",
        "One stream: batches one after another, every core an intra-op thread of the model. Per-core streams:",
        "one Python thread per core, one intra-op thread each, so one stream decodes while another runs the model.",
        "The limit is the best of both.",
        "",
        "| model | mix | limit images/s | how | at batch | single image ms | one stream, per batch size "
        "| per-core streams, per batch size |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for x in report["limits"]:
        per = ", ".join(f"b{k}: {v:.1f}" for k, v in x["per_batch"].items())
        par = ", ".join(f"b{k}: {v:.1f}" for k, v in x["parallel"].items())
        lines.append(
            f"| {x['model']} | {x['mix']} | {x['images_per_s']:.1f} | {x['how']} | {x['batch']} | "
            f"{x['single_image_ms']:.1f} | {per} | {par} |"
        )
    return lines


def _cells_table(report: dict) -> list[str]:
    limits = {(x["model"], x["mix"]): x for x in report["limits"]}
    lines = [
        "",
        "### Served (closed loop, keep-alive; cores = CPU time / wall time)",
        "",
        "| system | mix | clients | req/s | served / limit | p50 ms | p95 ms | p99 ms | errors "
        "| server cores | of which frontend | loadgen cores | other cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["cells"]:
        lim = limits.get((variant_of(c["system"]), c["mix"]))
        ratio = f"{c['requests_per_s'] / lim['images_per_s']:.2f}" if lim else ""
        lines.append(
            f"| {c['system']} | {c['mix']} | {c['concurrency']} | {c['requests_per_s']:.1f} | {ratio} | "
            f"{c['p50_ms']:.1f} | {c['p95_ms']:.1f} | {c['p99_ms']:.1f} | {c['errors']} | {c['server_cores']:.2f} | "
            f"{c.get('frontend_cores', 0):.2f} | {c['loadgen_cores']:.2f} | {c['other_cores']:.2f} |"
        )
    return lines


def _agreement_line(report: dict) -> list[str]:
    """The benchmark's own agreement figures, on the weights it serves: with random weights they
    say so, and point to the real model's figures (a near-100 % top-1 there is trivial)."""
    lines = []
    for name, a in (report.get("agreement") or {}).items():
        random = a["weights"].startswith("random")
        lines += [
            "",
            f"{name} vs fp32 TorchScript on {a['images']} sample photos and augmented crops "
            + (f"(**random weights**, {a['weights']}): " if random else f"({a['weights']} weights): ")
            + f"top-1 agreement {a['top1_agreement']:.1%} ({a['distinct_fp32_top1']} distinct fp32 top-1 classes), "
            f"centered-logit top-1 agreement {a['top1_agreement_centered']:.1%} "
            f"({a['distinct_fp32_top1_centered']} distinct), mean logit cosine {a['logit_cosine']:.4f}, "
            f"max logit difference {a.get('max_logit_difference', float('nan')):.3g}."
            + (
                " Random weights answer nearly one class for every image, so this says nothing about how"
                f' often real answers stay the same; a real model\'s figures are in "{REAL_MODEL_SECTION}" below.'
                if random
                else ""
            ),
        ]
    return lines


def _targets_table(report: dict) -> list[str]:
    lines = ["", "### Targets", "", "| target | value | holds | detail |", "|---|---:|---|---|"]
    for t in report["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"| {t['target']} | {value} | {'yes' if t['holds'] else '**no**'} | {t['detail']} |")
    return lines


def markdown(report: dict) -> str:
    lines = _header(report) + _limits_table(report) + _cells_table(report)
    lines += _agreement_line(report) + _targets_table(report) + [END]
    return "\n".join(lines)


def sweep_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        SWEEP_BEGIN,
        f"Sweep {report['date']} (`python scripts/bench.py --sweep`), {m['cpu']}, {m['cores']} cores, fp32, "
        f"small JPEG, {report['seconds']:g} s per cell; load average before/after {m['loadavg_before']} / "
        f"{m['loadavg_after']}.",
        "",
        "| config | clients | req/s | p50 ms | p99 ms | errors | server cores | other cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['config']} | {r['concurrency']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} | {r['server_cores']:.2f} | {r['other_cores']:.2f} |"
        )
    lines.append(SWEEP_END)
    return "\n".join(lines)


def profile_markdown(report: dict) -> str:
    """Per runtime and level: client, frontend, queue, handler, the rest; and the workers' samples."""
    m = report["machine"]
    lines = [
        PROFILE_BEGIN,
        f"Profiled {report['date']} (`python scripts/bench.py --profile`), {m['cpu']}, {m['cores']} cores "
        f"(flags: {' '.join(m.get('key_flags', []))}), small JPEG, {report['seconds']:g} s per level; load average "
        f"before/after {m['loadavg_before']} / {m['loadavg_after']}.",
        "",
        "| system | clients | req/s | client mean ms | client p50 ms | in frontend ms | of which queued ms "
        "| handler ms (its batch) | outside the handler ms | batch sizes | handler busy (worker-s/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for system, rows in report["runs"].items():
        for r in rows:
            outside = r["client_mean_ms"] - r["queue_ms"] - r["handler_ms_per_request"]
            sizes = ", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items())
            lines.append(
                f"| {system} | {r['clients']} | {r['requests_per_s']:.1f} | {r['client_mean_ms']:.1f} | "
                f"{r['client_p50_ms']:.1f} | {r['frontend_ms']:.1f} | {r['queue_ms']:.1f} | "
                f"{r['handler_ms_per_request']:.1f} | {outside:.1f} | {sizes} | {r['handler_busy_share']:.2f} |"
            )
    lines += ["", "Worker wall time by stage (py-spy, idle frames included, all workers together):", ""]
    lines += ["| system | clients | stages |", "|---|---:|---|"]
    for system, rows in report["runs"].items():
        for r in rows:
            stages = ", ".join(f"{stage} {share:.0%}" for stage, share in r["worker_stages"].items()) or "not sampled"
            lines.append(f"| {system} | {r['clients']} | {stages} |")
    lines.append(PROFILE_END)
    return "\n".join(lines)


# ---------------------------------------------------------------- files


def replace_block(text: str, begin: str, end: str, block: str) -> str:
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def write_docs(key: str, report: dict, block: str, begin: str, end: str) -> None:
    """The report under `key` in docs/performance.json, its block in docs/PERFORMANCE.md."""
    DOC.parent.mkdir(exist_ok=True)
    data = json.loads(JSON_FILE.read_text()) if JSON_FILE.is_file() else {}
    data[key] = report
    JSON_FILE.write_text(json.dumps(data, indent=1) + "\n")
    text = DOC.read_text() if DOC.is_file() else "# Performance\n"
    DOC.write_text(replace_block(text, begin, end, block))
