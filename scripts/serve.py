"""Start, watch and stop TorchServe (and the UI) for this project.

  python scripts/serve.py run      # foreground: TorchServe behind its doors + UI, Ctrl-C stops all (make run)
  python scripts/serve.py start    # the same in the background, returns when READY (make serve)
  python scripts/serve.py stop     # stops what start/run started (make stop)
  python scripts/serve.py status
  python scripts/serve.py ui       # the web UI alone, for a TorchServe already running (make ui)

TorchServe listens on loopback ports only; clients use the doors on the public ports (the nginx front
for HTTP, the gRPC gateway), as in the container image. The work is done by the service package
(service/local/fronted.py, service/local/ui_launch.py); this file is the command line and the banner.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from service.client.api import Settings
from service.local.fronted import FrontedTorchServe
from service.local.torchserve import TorchServe
from service.local.ui_launch import exec_ui, start_ui
from service.names import MODEL_STORE, RUN_DIR, UI_APP, UI_PORT
from service.processes import running_pid, stop_group
from service.versions.operations import restore_defaults


def print_banner(server: FrontedTorchServe, models: dict[str, dict], ui_port: int | None) -> None:
    e = server.endpoints
    model = next(iter(models))
    print("\nTorchServe is ready:")
    for name, info in models.items():
        warning = "   <- RANDOM WEIGHTS: answers mean nothing" if info.get("random_weights") else ""
        runtime = f", {info['runtime']} {info.get('precision')}" if info.get("runtime") else ""
        facts = f"{info.get('arch')}, weights {info.get('weights')}{runtime}"
        print(f"  model {name} {info.get('version')} ({facts}){warning}")
    print(f"""
  inference   {e.inference}/predictions/{model}
  management  {e.management}/models
  metrics     {e.metrics}/metrics   (Prometheus)
  gRPC        {server.doors.public["grpc_inference"]} (inference, OIP), {server.doors.public["grpc_management"]} \
(management)""")
    if ui_port:
        print(f"  web UI      http://127.0.0.1:{ui_port}")
    print(f"""
Call it (tokens are in {server.key_file}):
  TOKEN=$(python3 -c "import json;print(json.load(open('{server.key_file}'))['inference']['key'])")
  curl -H "Authorization: Bearer $TOKEN" -T photo.jpg {e.inference}/predictions/{model}
  curl -H "Authorization: Bearer $TOKEN" -H "X-TopK: 5" -T photo.jpg {e.inference}/predictions/{model}
Workers:  python scripts/manage.py describe {model}   |   python scripts/manage.py scale {model} 2
""")


def serve(server: FrontedTorchServe, foreground: bool, with_ui: bool) -> int:
    """Start, wait for READY and one warm-up answer per model; `run` then stays until Ctrl-C or the
    server's end and stops everything, `start` leaves the server running."""
    signal.signal(signal.SIGTERM, _interrupt)  # a kill or a process manager takes Ctrl-C's way out
    try:
        server.start()
    except (RuntimeError, OSError) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 1
    ui = None
    started = False
    try:
        ready = server.wait_ready()
        restore_defaults(server.client(), server.server.run_dir)  # versions.json's defaults, not load order
        models = server.warm_up(ready)
        if not foreground:
            print_banner(server, models, None)
            started = True
            return 0
        if with_ui:
            ui = start_ui(server)
        print_banner(server, models, UI_PORT if ui else None)
        print("Ctrl-C stops everything.")
        while server.alive():
            time.sleep(1)
        print(f"TorchServe, the front or the gRPC gateway exited; see {server.log_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except (RuntimeError, TimeoutError) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave Java running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ui is not None:
            stop_group(ui.pid, 10)
        if not started:
            server.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "start", "stop", "status", "ui"])
    p.add_argument("--run-dir", type=Path, default=RUN_DIR)
    p.add_argument("--model-store", type=Path, default=MODEL_STORE)
    p.add_argument("--no-ui", action="store_true", help="run: TorchServe only")
    p.add_argument("--ui-port", type=int, default=UI_PORT, help=f"ui: the page's port (default {UI_PORT})")
    p.add_argument(
        "--operator", action="store_true", help="ui: add the operator page (workers, scaling; management key)"
    )
    args = p.parse_args(argv)
    server = FrontedTorchServe(TorchServe(args.run_dir, args.model_store))

    if args.command == "stop":
        pid = running_pid(args.run_dir)
        server.stop()
        print("stopped" if pid else "nothing was running")
        return 0
    if args.command == "status":
        pid = running_pid(args.run_dir)
        print(f"running (pid {pid}), run directory {args.run_dir}" if pid else "not running")
        return 0 if pid else 1
    if args.command == "ui":
        inference = Settings.from_env().endpoints.inference
        print(f"web UI: http://127.0.0.1:{args.ui_port}  (TorchServe at {inference}; Ctrl-C stops)", flush=True)
        exec_ui(args.ui_port, args.operator)  # does not return
    if not any(args.model_store.glob("*.mar")):
        print(f"no archive in {args.model_store}: run `make archive` first", file=sys.stderr)
        return 2
    return serve(server, foreground=args.command == "run", with_ui=UI_APP.is_file() and not args.no_ui)


if __name__ == "__main__":
    sys.exit(main())
