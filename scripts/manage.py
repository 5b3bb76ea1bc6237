"""Manage a running TorchServe without copying tokens: models, workers, and model versions.

python scripts/manage.py models
python scripts/manage.py describe resnet18
python scripts/manage.py scale resnet18 3        # min = max = 3 workers
python scripts/manage.py deploy model_store/shapes.mar --eval labelled-photos/ --promote
python scripts/manage.py versions shapes
python scripts/manage.py promote shapes 2
python scripts/manage.py rollback shapes          # back to the previous default (still loaded)
python scripts/manage.py retire shapes 3          # unload a version that is not the default

deploy copies the archive into the model store as <model>-v<version>.mar, registers it beside the default
(warm), runs the gate (--eval DIR, or the held-out split of its fine-tuning report) on both through the
served API and prints them side by side; --promote makes it the default only if the gate holds.
The client and key file are service/client/api.py's; versions are service/versions; this is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.local.torchserve import client_for
from service.names import MODEL_STORE, RUN_DIR
from service.properties import read_properties
from service.versions.operations import deploy, promote_version, retire, rollback, version_rows
from service.versions.store import VersionError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    dep = sub.add_parser("deploy", help="register an archive as a new version beside the default, gate it")
    dep.add_argument("archive", type=Path)
    dep.add_argument(
        "--eval",
        type=Path,
        metavar="DIR",
        help="labelled photos, one sub-folder per class (default: the held-out split its fine-tuning report recorded)",
    )
    dep.add_argument("--promote", action="store_true", help="make it the default if the gate holds")
    dep.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="accuracy the candidate may lose against the default, as a fraction (default 0)",
    )
    dep.add_argument("--new-classes", action="store_true", help="its classes differ from the default's on purpose")
    for name, text in (("promote", "make a registered version the default"), ("retire", "unregister a version")):
        c = sub.add_parser(name, help=text)
        c.add_argument("model")
        c.add_argument("version")
    sub.add_parser("rollback", help="back to the previous default").add_argument("model")
    sub.add_parser("versions", help="each version: default, workers, registered, accuracy").add_argument("model")
    return p.parse_args(argv)


def model_store(run_dir: Path) -> Path:
    """The store of the server that runs from `run_dir` (its rendered config), else the checkout's."""
    for config in (run_dir / "config.properties", run_dir / "torchserve" / "config.properties"):
        if config.is_file():
            return Path(read_properties(config)["model_store"])
    return MODEL_STORE


def print_versions(rows: list[dict]) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"

    print(f"{'':2}{'version':<10}{'workers':<9}{'registered':<27}{'report acc.':<13}{'gate acc.':<11}archive")
    for r in rows:
        print(
            f"{'*' if r['default'] else '':2}{r['version']:<10}{r['workers']:<9}{r['registered']:<27}"
            f"{pct(r['report_accuracy']):<13}{pct(r['gate_accuracy']):<11}{r['archive']}"
        )
    print("(* the default)")


def versions_command(args: argparse.Namespace) -> int:
    client = client_for(args.run_dir)
    if args.command == "deploy":
        result = deploy(
            client,
            args.run_dir,
            model_store(args.run_dir),
            args.archive,
            args.eval,
            args.promote,
            args.tolerance,
            args.new_classes,
        )
        return 1 if args.promote and not result.promoted else 0
    if args.command == "promote":
        promote_version(client, args.run_dir, args.model, args.version)
        print(f"{args.model} version {args.version} is the default")
    elif args.command == "rollback":
        print(f"{args.model} version {rollback(client, args.run_dir, args.model)} is the default again")
    elif args.command == "retire":
        moved = retire(client, args.run_dir, model_store(args.run_dir), args.model, args.version)
        print(f"{args.model} version {args.version} unregistered" + (f"; its archive kept in {moved}" if moved else ""))
    else:
        print_versions(version_rows(client, args.run_dir, args.model, model_store(args.run_dir)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command in ("deploy", "promote", "rollback", "retire", "versions"):
        try:
            return versions_command(args)
        except VersionError as e:
            print(f"manage: {e}", file=sys.stderr)
            return 2
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
