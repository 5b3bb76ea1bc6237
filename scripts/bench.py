"""Served throughput and latency against the in-process limit of each runtime, LitServe and a Flask
baseline (make bench).

  python scripts/bench.py                  # the full table, written to docs/PERFORMANCE.md + docs/performance.json
  python scripts/bench.py --duration 3     # quicker, noisier
  python scripts/bench.py --sweep          # workers/threads/batchSize/maxBatchDelay sweep (small JPEG, fp32)
  python scripts/bench.py --profile        # where a request's time goes at 1 and 4 clients (py-spy + frontend)
  python scripts/bench.py --ceiling        # TorchServe's own ceiling: a fixed-CPU-cost handler beside ours

It starts everything it measures (random-weights archives: speed does not depend on weight
values: fp32 TorchScript, int8, ONNX Runtime, OpenVINO fp32 and, where the CPU has it, bf16) and
stops it again. LitServe (scripts/baseline_litserve.py) serves the same model.pt in two worker/batch
configs. Per image mix and concurrency level, a closed-loop load generator
(one process, one thread and one keep-alive connection per client, request bytes encoded once)
runs for a fixed time. CPU is process CPU time / wall time: the server's whole process group,
the load generator itself, and everything else on the machine ("other"), so a noisy run shows.

The limit is the same decode + preprocessing + model (handler code, optimized as served) in
this one Python process using every core, images/s: the best of one stream with all cores as
intra-op threads and one stream per core with one thread each, over batch 1, 2, 4 and the served
batchSize; "single image" is the one-stream median time for one image at a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

from service.bench.ceiling import CEILING_BEGIN, CEILING_END, ceiling_markdown, run_ceiling
from service.bench.report import (
    BEGIN,
    DOC,
    END,
    JSON_FILE,
    PROFILE_BEGIN,
    PROFILE_END,
    SWEEP_BEGIN,
    SWEEP_END,
    markdown,
    profile_markdown,
    sweep_markdown,
    write_docs,
)
from service.bench.runs import LEVELS, BenchOptions, run_bench, run_profile, run_sweep
from service.names import ROOT

warnings.filterwarnings("ignore")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = BenchOptions
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=d.duration, help=f"measured seconds per cell ({d.duration:g})")
    p.add_argument("--warm", type=float, default=d.warm, help="unmeasured seconds before each cell")
    p.add_argument("--limit-seconds", type=float, default=d.limit_seconds, help="seconds per in-process limit run")
    p.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrency levels (1 4 16)")
    p.add_argument("--sweep", action="store_true", help="sweep server configs instead of the main table")
    p.add_argument("--profile", action="store_true", help="profile a request at 1 and 4 clients instead")
    p.add_argument("--ceiling", action="store_true", help="TorchServe's ceiling for this work (4 clients) instead")
    p.add_argument("--only", nargs="+", help="--sweep: only these config numbers")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--no-flask", action="store_true")
    p.add_argument("--no-litserve", action="store_true")
    p.add_argument("--no-runtimes", action="store_true", help="TorchScript only (no ONNX Runtime, OpenVINO)")
    p.add_argument("--no-busy", action="store_true", help="skip the cells beside a busy program")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--ts-option", action="append", default=[], help="config.properties KEY=VALUE to try")
    return p.parse_args(argv)


def options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        duration=args.duration,
        warm=args.warm,
        limit_seconds=args.limit_seconds,
        levels=tuple(args.levels),
        int8=not args.no_int8,
        flask=not args.no_flask,
        litserve=not args.no_litserve,
        runtimes=not args.no_runtimes,
        busy=not args.no_busy,
        ts_options=dict(option.split("=", 1) for option in args.ts_option),
        only=tuple(args.only or ()),
    )


def profile_run(o: BenchOptions, work: Path) -> dict:
    return run_profile(o, work, max(o.duration, 5.0))  # py-spy needs a few seconds per level


# Each run: its flag -> (run, its markdown block, the block's markers in docs/PERFORMANCE.md).
MODES = {
    "profile": (profile_run, profile_markdown, PROFILE_BEGIN, PROFILE_END),
    "ceiling": (run_ceiling, ceiling_markdown, CEILING_BEGIN, CEILING_END),
    "sweep": (run_sweep, sweep_markdown, SWEEP_BEGIN, SWEEP_END),
    "bench": (run_bench, markdown, BEGIN, END),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = next((name for name in ("profile", "ceiling", "sweep") if getattr(args, name)), "bench")
    run, block_of, begin, end = MODES[mode]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        report = run(options(args), Path(tmp))
    block = block_of(report)
    if not args.no_write:
        write_docs(mode, report, block, begin, end)
        print(f"wrote {DOC.relative_to(ROOT)} and {JSON_FILE.relative_to(ROOT)}")
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
