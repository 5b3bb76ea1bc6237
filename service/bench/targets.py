"""The benchmark's targets, evaluated on the cells and limits of one run (docs/PERFORMANCE.md).

Systems are named once here: the TorchServe archive variants served, the peers beside them, and
the runtime docs/PERFORMANCE.md recommends (the one the LitServe targets are held against).
"""

from __future__ import annotations

from service.archive.agreement import Agreement
from service.bench.limit import Limit
from service.bench.load import Cell

SMALL, BIG = "small JPEG 0.3 MP", "12 MP JPEG"
FP32, INT8, FLASK = "TorchServe fp32", "TorchServe int8", "Flask baseline"
ORT, OV_BF16 = "TorchServe onnxruntime fp32", "TorchServe openvino bf16"
LITSERVE = "LitServe"
# Archive variant (service/bench/systems.py VARIANTS) -> the system that serves it. openvino fp32
# is measured in process only (run time; its limit is below ONNX Runtime's here).
SYSTEMS = {"fp32": FP32, "int8": INT8, "onnxruntime": ORT, "openvino-bf16": OV_BF16}
# What docs/PERFORMANCE.md recommends for fp32 (latency and throughput): held against LitServe.
RECOMMENDED = ORT
FAST_OPT_INS = {INT8: "int8", OV_BF16: "openvino-bf16"}
# Where docs/PERFORMANCE.md has the top-1 agreement of a real pretrained model (tests/test_real_model.py).
REAL_MODEL_SECTION = "Agreement on a real model"


def agreement_detail(top1: float, centered: float, weights: str, images: int | None = None) -> str:
    """How a detail names an agreement figure: one measured on random weights says so and where the
    real-model figure is (with random weights fp32 answers nearly one class for every image, so
    plain top-1 agreement is high for free and says nothing about answer quality)."""
    on = f" on {images} images" if images else ""
    figures = f"top-1 agreement with fp32 {top1:.1%}, centered {centered:.1%}{on}"
    if weights.startswith("random"):
        return f"random-weights {figures} (not a quality figure; a real model's: {REAL_MODEL_SECTION})"
    return figures


def variant_of(system: str) -> str | None:
    """The archive variant a served system runs (also "... beside a busy process")."""
    for variant, name in SYSTEMS.items():
        if system == name or system.startswith(name + " beside"):
            return variant
    return None


def cell(cells: list[Cell], system: str, mix: str, level: int) -> Cell | None:
    return next((c for c in cells if c.system == system and c.mix == mix and c.concurrency == level), None)


def best_litserve(cells: list[Cell], level: int) -> tuple[Cell | None, Cell | None]:
    """LitServe's best configs at this level on the small JPEG: (most req/s, lowest p50)."""
    mine = [c for c in cells if c.system.startswith(LITSERVE) and c.mix == SMALL and c.concurrency == level]
    if not mine:
        return None, None
    return max(mine, key=lambda c: c.requests_per_s), min(mine, key=lambda c: c.p50_ms)


class Targets(list):
    """The targets as report rows: name, value, bound, holds, detail."""

    def add(self, name: str, value: float | None, bound: float, text: str) -> None:
        ok = value is not None and value >= bound
        self.append({"target": name, "value": value, "bound": bound, "holds": ok, "detail": text})


def served_vs_own_limit(targets: Targets, cells: list[Cell], limits: dict) -> None:
    """fp32, small JPEG, 4 clients: served >= 0.85 of the in-process limit of the same runtime."""
    for system in (FP32, ORT):
        s4, x = cell(cells, system, SMALL, 4), limits.get((variant_of(system), SMALL))
        if not (s4 and x):
            continue
        fill = max([v for v in (x.per_batch.get(4), x.parallel.get(2)) if v], default=None)
        context = ""
        if fill:  # 4 clients keep 2 workers at batch 2 or 1 worker at batch 4, not more
            ratio = s4.requests_per_s / fill
            context = f"; in process at the batches 4 clients can fill: {fill:.1f}/s, ratio {ratio:.2f}"
        targets.add(
            f"{system}, small JPEG c=4: served / in-process limit of the same runtime >= 0.85",
            s4.requests_per_s / x.images_per_s,
            0.85,
            f"{s4.requests_per_s:.1f} req/s vs {x.images_per_s:.1f} images/s ({x.how}, batch {x.batch}){context}",
        )


def versus_litserve(targets: Targets, cells: list[Cell], agreements: dict[str, Agreement]) -> None:
    """The recommended runtime against LitServe's best config; the fast opt-ins against LitServe fp32."""
    best4, _ = best_litserve(cells, 4)
    _, fastest1 = best_litserve(cells, 1)
    ours4, ours1 = cell(cells, RECOMMENDED, SMALL, 4), cell(cells, RECOMMENDED, SMALL, 1)
    if best4 and ours4:
        targets.add(
            f"{RECOMMENDED}, small JPEG c=4: req/s / LitServe's best >= 1.2",
            ours4.requests_per_s / best4.requests_per_s,
            1.2,
            f"{ours4.requests_per_s:.1f} vs {best4.requests_per_s:.1f} req/s ({best4.system})",
        )
    if fastest1 and ours1:
        targets.add(
            f"{RECOMMENDED}, small JPEG c=1: LitServe's best p50 / our p50 >= 1 (p50 <= LitServe's)",
            fastest1.p50_ms / ours1.p50_ms,
            1.0,
            f"p50 {ours1.p50_ms:.1f} vs {fastest1.p50_ms:.1f} ms ({fastest1.system})",
        )
    for system, variant in FAST_OPT_INS.items():
        fast4 = cell(cells, system, SMALL, 4)
        if best4 and fast4:
            a = agreements.get(variant)
            agreement = ""
            if a:
                agreement = "; " + agreement_detail(a.top1_agreement, a.top1_agreement_centered, a.weights)
            targets.add(
                f"{system}, small JPEG c=4: req/s / LitServe's best fp32 >= 2",
                fast4.requests_per_s / best4.requests_per_s,
                2.0,
                f"{fast4.requests_per_s:.1f} vs {best4.requests_per_s:.1f} req/s{agreement}",
            )


def served_vs_flask(targets: Targets, cells: list[Cell]) -> None:
    s4, f4 = cell(cells, FP32, SMALL, 4), cell(cells, FLASK, SMALL, 4)
    if s4 and f4:
        targets.add(
            "small JPEG c=4: served / Flask baseline >= 1.1",
            s4.requests_per_s / max(f4.requests_per_s, 1e-9),
            1.1,
            f"{s4.requests_per_s:.1f} vs {f4.requests_per_s:.1f} req/s",
        )


def latency_vs_single_image(targets: Targets, cells: list[Cell], limits: dict) -> None:
    for system in (FP32, ORT):
        s1, x = cell(cells, system, SMALL, 1), limits.get((variant_of(system), SMALL))
        if s1 and x:
            single = x.single_image_ms
            targets.add(
                f"{system} c=1: in-process single-image time / served p50 >= 0.8 (p50 <= 1.25x)",
                single / s1.p50_ms,
                0.8,
                f"p50 {s1.p50_ms:.1f} ms vs single image {single:.1f} ms in process (x{s1.p50_ms / single:.2f})",
            )


def big_vs_small(targets: Targets, cells: list[Cell]) -> None:
    for level in (4, 16):
        b, s = cell(cells, FP32, BIG, level), cell(cells, FP32, SMALL, level)
        if b and s:
            targets.add(
                f"12 MP JPEG c={level}: throughput / small JPEG throughput >= 0.8",
                b.requests_per_s / s.requests_per_s,
                0.8,
                f"{b.requests_per_s:.1f} vs {s.requests_per_s:.1f} req/s",
            )


def int8_vs_fp32(targets: Targets, cells: list[Cell], agreement: Agreement | None) -> None:
    for level in (4, 16):
        q, s = cell(cells, INT8, SMALL, level), cell(cells, FP32, SMALL, level)
        if q and s:
            detail = f"{q.requests_per_s:.1f} vs {s.requests_per_s:.1f} req/s"
            if agreement:
                a = agreement
                detail += "; " + agreement_detail(a.top1_agreement, a.top1_agreement_centered, a.weights, a.images)
            targets.add(
                f"int8 small JPEG c={level}: int8 / fp32 served throughput >= 3",
                q.requests_per_s / s.requests_per_s,
                3.0,
                detail,
            )


def evaluate(cells: list[Cell], limits: list[Limit], agreements: dict[str, Agreement]) -> list[dict]:
    by_model_mix = {(x.model, x.mix): x for x in limits}
    targets = Targets()
    served_vs_own_limit(targets, cells, by_model_mix)
    versus_litserve(targets, cells, agreements)
    served_vs_flask(targets, cells)
    latency_vs_single_image(targets, cells, by_model_mix)
    big_vs_small(targets, cells)
    int8_vs_fp32(targets, cells, agreements.get("int8"))
    return list(targets)
