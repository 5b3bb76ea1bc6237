"""Fine-tune an image classifier on a folder of labelled photos and build a served archive of it.

DATA holds one sub-folder per class (torchvision's ImageFolder layout), or train/ and val/ folders
that each hold them; any format the server accepts. Class indices follow the folder names' sorted
order and the archive's labels are written from that same list.

  python scripts/finetune.py --make-demo-data demo-shapes            # a folder to try it on
  python scripts/finetune.py demo-shapes --model-name shapes         # official ResNet-18 weights
  python scripts/finetune.py demo-shapes --model-name shapes --random-weights --image-size 64 --unfreeze

The archive lands in model_store/ (every .mar there is served) with <name>.report.json,
<name>.report.md and <name>.confusion.png beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.archive.builder import DEFAULT_ARCH
from service.finetune.demo import make_demo_data
from service.finetune.errors import FinetuneError
from service.finetune.run import FinetuneRequest, finetune
from service.finetune.train import TrainConfig
from service.names import MODEL_CONFIG, MODEL_STORE

DEFAULTS = TrainConfig()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, nargs="?", help="folder of labelled photos, one sub-folder per class")
    p.add_argument("--make-demo-data", type=Path, metavar="DIR", help="write a generated demo folder to DIR and exit")
    p.add_argument("--model-name", help="the archive's name (required to train)")
    p.add_argument(
        "--version", help="the model version (default: one above the highest of --model-name in --export-path)"
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path, help="a local state dict for --arch (default: the official weights)")
    weights.add_argument("--random-weights", action="store_true", help="start from random weights (tests, offline)")
    p.add_argument("--arch", default=DEFAULT_ARCH, help=f"torchvision classification model (default {DEFAULT_ARCH})")
    p.add_argument("--val-split", type=float, default=0.2, help="validation share of each class (default 0.2)")
    p.add_argument("--image-size", type=int, help="crop size (default: the weights' own, 224 for ResNet-18)")
    p.add_argument("--unfreeze", action="store_true", help="after the head, train the whole network")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="at most this many epochs per phase")
    p.add_argument(
        "--patience",
        type=int,
        default=DEFAULTS.patience,
        help="stop after this many epochs without a lower validation loss",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--head-lr", type=float, default=DEFAULTS.head_lr)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="learning rate of the whole network (--unfreeze)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-path", type=Path, default=MODEL_STORE)
    p.add_argument("--model-config", type=Path, default=MODEL_CONFIG, help="workers, batching, handler settings")
    p.add_argument("--force", action="store_true", help="overwrite an existing archive")
    args = p.parse_args(argv)
    if not args.make_demo_data and not (args.data and args.model_name):
        p.error("give DATA and --model-name (or --make-demo-data DIR)")
    return args


def request_of(args: argparse.Namespace) -> FinetuneRequest:
    train = TrainConfig(args.epochs, args.patience, args.batch_size, args.head_lr, args.lr, args.seed)
    return FinetuneRequest(
        data=args.data,
        model_name=args.model_name,
        version=args.version,
        export_path=args.export_path,
        model_config=args.model_config,
        arch=args.arch,
        weights=args.weights,
        random_weights=args.random_weights,
        seed=args.seed,
        val_split=args.val_split,
        image_size=args.image_size,
        unfreeze=args.unfreeze,
        train=train,
        force=args.force,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_demo_data:
        folder = make_demo_data(args.make_demo_data, seed=args.seed)
        print(f"wrote a demo ImageFolder to {folder}")
        return 0
    try:
        result = finetune(request_of(args))
    except FinetuneError as e:
        print(f"finetune: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finetune: interrupted before training started; nothing written", file=sys.stderr)
        return 130
    print(f"built {result.archive} in {result.seconds:.0f} s; validation accuracy {100 * result.accuracy:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
