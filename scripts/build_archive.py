"""Build a TorchServe archive (.mar) of a TorchScript image classifier.

The archive carries everything the handler needs: the TorchScript model, its labels, its
preprocessing, model-config.yaml (workers, batching, top-k) and a provenance record
(architecture, weight source, sha256 of weights and model file).

Weights, by default torchvision's official ones (downloaded into torch's cache), or:
  --weights FILE             a local state dict, e.g. resnet18-f37072fd.pth
  --random-weights [--seed]  deterministic untrained weights, for tests and offline smoke runs
  --torchscript FILE --labels FILE   your own TorchScript classifier and its class names

--quantize int8: an int8 model for the x86 quantized engine (about 5x to 10x faster on CPU).
With the official weights, torchvision's own pre-quantized ResNet18_QuantizedWeights (downloaded);
with --weights or --random-weights, post-training static quantization of those fp32 weights,
calibrated on --calibration DIR (a folder of your own photos, the recommended way) and augmented
crops of them; without it, on the sample photos (installed by requirements-dev.txt only).

--runtime onnxruntime --quantize int8: ONNX Runtime's own post-training static quantization of the
export (any model, --torchscript too), calibrated as above; its top-1 agreement with fp32 is printed.

--interpolation bicubic (and --resize, --crop, --mean, --std): the preprocessing your model was
trained with; the archive records it and the handler applies it.

--runtime onnxruntime|openvino: the archive also carries model.onnx, exported from model.pt (which
stays the source of truth) and checked against it on the same photos (fp32: max logit difference
<= 1e-4, else no archive); the handler then runs that runtime. --precision bf16 (openvino, on a CPU
with bf16) trades exactness for speed and prints its top-1 agreement with fp32, as int8 does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handler.preprocess import PIL_FILTERS
from handler.runtime import RUNTIMES
from service.archive import BuildError, BuildRequest
from service.archive import build as build_request
from service.archive.builder import DEFAULT_ARCH
from service.archive.export import PRECISIONS
from service.names import DEFAULT_MODEL, MODEL_CONFIG, MODEL_STORE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, help="local state dict for --arch")
    source.add_argument("--random-weights", action="store_true", help="untrained weights (answers mean nothing)")
    source.add_argument("--torchscript", type=Path, help="a TorchScript image classifier of your own")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    p.add_argument("--labels", type=Path, help="class names: JSON list or TorchServe index_to_name.json")
    p.add_argument("--arch", default=DEFAULT_ARCH, help=f"torchvision classification model (default {DEFAULT_ARCH})")
    p.add_argument("--model-name", default=DEFAULT_MODEL)
    p.add_argument(
        "--version",
        help="the model version (default: one above the highest of --model-name in --export-path, 1.0 if none)",
    )
    p.add_argument("--export-path", type=Path, default=MODEL_STORE)
    p.add_argument("--model-config", type=Path, default=MODEL_CONFIG, help="workers, batching, handler settings")
    p.add_argument("--resize", type=int, help="shorter side before cropping (default: the weights' own, else 256)")
    p.add_argument("--crop", type=int, help="center crop (default: the weights' own, else 224)")
    p.add_argument("--mean", type=float, nargs=3, help="normalization mean (default ImageNet's)")
    p.add_argument("--std", type=float, nargs=3, help="normalization std (default ImageNet's)")
    p.add_argument(
        "--interpolation", choices=PIL_FILTERS, help="resize filter (default: the weights' own, else bilinear)"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing archive")
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8 model for the x86 quantized engine, or ONNX Runtime's with --runtime onnxruntime",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="folder of your own photos to calibrate --quantize int8 on and to check a --runtime export on "
        "(default: the sample photos, dev-only)",
    )
    p.add_argument(
        "--runtime", choices=RUNTIMES, default=RUNTIMES[0], help="what serves the model (default %(default)s)"
    )
    p.add_argument(
        "--precision", choices=PRECISIONS, default=PRECISIONS[0], help="bf16: --runtime openvino on a CPU with bf16"
    )
    args = p.parse_args(argv)
    if args.torchscript and not args.labels:
        p.error("--torchscript needs --labels")
    if args.quantize and args.torchscript and args.runtime == RUNTIMES[0]:
        p.error("--quantize needs a torchvision --arch, not --torchscript (or --runtime onnxruntime)")
    if args.calibration and not (args.quantize or args.runtime != RUNTIMES[0]):
        p.error("--calibration needs --quantize int8 or --runtime onnxruntime/openvino")
    return args


def build(args: argparse.Namespace) -> Path:
    """Build from parsed flags (the tests and the benchmark call this with parse_args' result)."""
    return build_request(BuildRequest(**vars(args)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        build(args)
    except BuildError as e:
        print(f"build_archive: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
