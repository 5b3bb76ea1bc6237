"""Overload soak: measure capacity, hold about twice that for a while, check the service comes back.

  python scripts/soak.py                      # own TorchServe on free ports from model_store/ (make soak)
  python scripts/soak.py --duration 30        # shorter
  python scripts/soak.py --run-dir var        # against a running server (make serve)

Loopback only. The phases and figures are service/bench/soak.py's; this is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from service.bench.soak import SoakPlan, passed, soak
from service.local.torchserve import TorchServe, client_for, server_endpoints
from service.names import DEFAULT_MODEL, MODEL_STORE
from service.photos import grace_hopper


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, help="a running server's run directory (default: start our own)")
    p.add_argument("--model-store", type=Path, default=MODEL_STORE)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--duration", type=float, default=180, help="seconds of overload (default 180)")
    p.add_argument("--factor", type=float, default=2.0, help="offered load / measured capacity (default 2)")
    p.add_argument("--measure", type=float, default=10, help="seconds to measure capacity (default 10)")
    p.add_argument("--clients", type=int, default=8, help="closed-loop clients for the capacity measurement")
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


def loopback_problem(run_dir: Path) -> str | None:
    """Why this run directory's server is not one the soak may load, or None."""
    endpoints = server_endpoints(run_dir)
    if endpoints is None:
        return f"no server config in {run_dir}"
    for url in (endpoints.inference, endpoints.management):
        if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
            return f"soak runs against loopback only, not {url}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {"model": args.model,
               "plan": SoakPlan(args.duration, args.factor, args.measure, args.clients)}
    image = grace_hopper().read_bytes()
    if args.run_dir:
        if problem := loopback_problem(args.run_dir):
            print(problem, file=sys.stderr)
            return 2
        figures = soak(client_for(args.run_dir), image, **options)
    else:
        with TorchServe.on_free_ports(Path(tempfile.mkdtemp(prefix="soak-")), args.model_store) as server:
            figures = soak(server.client(), image, **options)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ok = passed(figures)
    print("soak passed" if ok else "soak FAILED: requests without an answer or workers replaced")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
