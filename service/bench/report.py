"""The benchmark's targets, its Markdown tables (docs/PERFORMANCE.md) and JSON (docs/performance.json)."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import torch

from handler.cores import available_cores
from service.archive.agreement import Int8Agreement
from service.bench.limit import Limit
from service.bench.load import Cell
from service.names import ROOT

DOC = ROOT / "docs" / "PERFORMANCE.md"
JSON_FILE = ROOT / "docs" / "performance.json"
BEGIN, END = "<!-- bench:begin (scripts/bench.py writes this block) -->", "<!-- bench:end -->"
SWEEP_BEGIN, SWEEP_END = "<!-- sweep:begin (scripts/bench.py --sweep writes this block) -->", "<!-- sweep:end -->"
SMALL, BIG = "small JPEG 0.3 MP", "12 MP JPEG"
FP32, INT8, FLASK = "TorchServe fp32", "TorchServe int8", "Flask baseline"


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
    return {
        "cpu": cpu_model(),
        "cores": available_cores(),
        "platform": platform.platform(terse=True),
        "torch": torch.__version__,
        "loadavg_before": loadavg(),
    }


# ---------------------------------------------------------------- targets


def cell(cells: list[Cell], system: str, mix: str, level: int) -> Cell | None:
    return next((c for c in cells if c.system == system and c.mix == mix and c.concurrency == level), None)


class Targets(list):
    """The targets as report rows: name, value, bound, holds, detail."""

    def add(self, name: str, value: float | None, bound: float, text: str) -> None:
        ok = value is not None and value >= bound
        self.append({"target": name, "value": value, "bound": bound, "holds": ok, "detail": text})


def _served_vs_limit(targets: Targets, cells: list[Cell], limits: dict) -> None:
    s4 = cell(cells, FP32, SMALL, 4)
    if not (s4 and ("fp32", SMALL) in limits):
        return
    x = limits["fp32", SMALL]
    fill = max([v for v in (x.per_batch.get(4), x.parallel.get(2)) if v], default=None)
    context = ""
    if fill:  # 4 clients keep 2 workers at batch 2 or 1 worker at batch 4, not more
        context = (
            f"; in process at the batches 4 clients can fill (1 x batch 4, or 2 streams x batch 2):"
            f" {fill:.1f}/s, ratio {s4.requests_per_s / fill:.2f}"
        )
    targets.add(
        "small JPEG c=4: served / in-process limit >= 0.90",
        s4.requests_per_s / x.images_per_s,
        0.90,
        f"{s4.requests_per_s:.1f} req/s vs {x.images_per_s:.1f} images/s ({x.how}, batch {x.batch}){context}",
    )


def _served_vs_flask(targets: Targets, cells: list[Cell]) -> None:
    s4, f4 = cell(cells, FP32, SMALL, 4), cell(cells, FLASK, SMALL, 4)
    if s4 and f4:
        targets.add(
            "small JPEG c=4: served / Flask baseline >= 1.1",
            s4.requests_per_s / max(f4.requests_per_s, 1e-9),
            1.1,
            f"{s4.requests_per_s:.1f} vs {f4.requests_per_s:.1f} req/s",
        )


def _latency_vs_single_image(targets: Targets, cells: list[Cell], limits: dict) -> None:
    s1 = cell(cells, FP32, SMALL, 1)
    if s1 and ("fp32", SMALL) in limits:
        single = limits["fp32", SMALL].single_image_ms
        targets.add(
            "c=1: in-process single-image time / served p50 >= 0.8 (p50 <= 1.25x)",
            single / s1.p50_ms,
            0.8,
            f"p50 {s1.p50_ms:.1f} ms vs single image {single:.1f} ms in process (x{s1.p50_ms / single:.2f})",
        )


def _big_vs_small(targets: Targets, cells: list[Cell]) -> None:
    for level in (4, 16):
        b, s = cell(cells, FP32, BIG, level), cell(cells, FP32, SMALL, level)
        if b and s:
            targets.add(
                f"12 MP JPEG c={level}: throughput / small JPEG throughput >= 0.8",
                b.requests_per_s / s.requests_per_s,
                0.8,
                f"{b.requests_per_s:.1f} vs {s.requests_per_s:.1f} req/s",
            )


def _int8_vs_fp32(targets: Targets, cells: list[Cell], agreement: Int8Agreement | None) -> None:
    for level in (4, 16):
        q, s = cell(cells, INT8, SMALL, level), cell(cells, FP32, SMALL, level)
        if q and s:
            detail = f"{q.requests_per_s:.1f} vs {s.requests_per_s:.1f} req/s"
            if agreement:
                detail += (
                    f"; top-1 agreement {agreement.top1_agreement:.1%}, centered"
                    f" {agreement.top1_agreement_centered:.1%} on {agreement.images} images"
                )
            targets.add(
                f"int8 small JPEG c={level}: int8 / fp32 served throughput >= 3",
                q.requests_per_s / s.requests_per_s,
                3.0,
                detail,
            )


def evaluate(cells: list[Cell], limits: list[Limit], agreement: Int8Agreement | None) -> list[dict]:
    by_model_mix = {(x.model, x.mix): x for x in limits}
    targets = Targets()
    _served_vs_limit(targets, cells, by_model_mix)
    _served_vs_flask(targets, cells)
    _latency_vs_single_image(targets, cells, by_model_mix)
    _big_vs_small(targets, cells)
    _int8_vs_fp32(targets, cells, agreement)
    return list(targets)


# ---------------------------------------------------------------- Markdown


def _header(report: dict) -> list[str]:
    m = report["machine"]
    return [
        BEGIN,
        f"Measured {report['date']} by `{report['command']}` on **{m['cpu']}, {m['cores']} cores** "
        f"({m['platform']}; torch {m['torch']}). Load average before/after: {m['loadavg_before']} / "
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
        model = "int8" if "int8" in c["system"] else "fp32"
        lim = limits.get((model, c["mix"]))
        ratio = f"{c['requests_per_s'] / lim['images_per_s']:.2f}" if lim else ""
        lines.append(
            f"| {c['system']} | {c['mix']} | {c['concurrency']} | {c['requests_per_s']:.1f} | {ratio} | "
            f"{c['p50_ms']:.1f} | {c['p95_ms']:.1f} | {c['p99_ms']:.1f} | {c['errors']} | {c['server_cores']:.2f} | "
            f"{c.get('frontend_cores', 0):.2f} | {c['loadgen_cores']:.2f} | {c['other_cores']:.2f} |"
        )
    return lines


def _agreement_line(report: dict) -> list[str]:
    a = report.get("int8_agreement")
    if not a:
        return []
    return [
        "",
        f"int8 vs fp32 on {a['images']} sample photos and augmented crops ({a['weights']} weights): "
        f"top-1 agreement **{a['top1_agreement']:.1%}** ({a['distinct_fp32_top1']} distinct fp32 top-1 classes), "
        f"centered-logit top-1 agreement **{a['top1_agreement_centered']:.1%}** "
        f"({a['distinct_fp32_top1_centered']} distinct), mean logit cosine {a['logit_cosine']:.4f}.",
    ]


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
