"""Manage a running TorchServe without copying tokens: list models, describe workers, scale.

python scripts/manage.py models
python scripts/manage.py describe resnet18
python scripts/manage.py scale resnet18 3        # min = max = 3 workers

The client and the key file handling are service/client/api.py's; this is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.local.torchserve import client_for
from service.names import RUN_DIR


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=RUN_DIR, help="the server's run directory (holds key_file.json)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list registered models")
    d = sub.add_parser("describe", help="a model's workers and settings")
    d.add_argument("model")
    s = sub.add_parser("scale", help="set the number of workers")
    s.add_argument("model")
    s.add_argument("workers", type=int, help="minimum workers")
    s.add_argument("--max", type=int, help="maximum workers (default: same as minimum)")
    args = p.parse_args(argv)

    client = client_for(args.run_dir)
    if args.command == "models":
        response = client.list_models()
    elif args.command == "describe":
        response = client.describe_model(args.model)
    else:
        response = client.scale_workers(args.model, args.workers, args.max)
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text)
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
