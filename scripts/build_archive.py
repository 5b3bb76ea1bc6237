"""Build a TorchServe archive (.mar) of a TorchScript image classifier.

The archive carries everything the handler needs: the TorchScript model, its labels, its
preprocessing, model-config.yaml (workers, batching, top-k) and a provenance record
(architecture, weight source, sha256 of weights and model file).

Weights, by default torchvision's official ones (downloaded into torch's cache), or:
  --weights FILE             a local state dict, e.g. resnet18-f37072fd.pth
  --random-weights [--seed]  deterministic untrained weights, for tests and offline smoke runs
  --torchscript FILE --labels FILE   your own TorchScript classifier and its class names
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torchvision
from torchvision import models

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handler.model_card import MODEL_FILE, ModelCard, Preprocessing, read_labels, sha256_file  # noqa: E402

HANDLER_PACKAGE = ROOT / "handler"
HANDLER_ENTRY = HANDLER_PACKAGE / "torchserve_handler.py"
DEFAULT_MODEL_CONFIG = ROOT / "config" / "model-config.yaml"
DEFAULT_EXPORT_PATH = ROOT / "model_store"

# torch 2.14 marks torch.jit as deprecated; TorchServe 0.12 still loads TorchScript.
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")


class BuildError(Exception):
    """A reason the archive cannot be built, worded for the person running the build."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, help="local state dict for --arch")
    source.add_argument("--random-weights", action="store_true", help="untrained weights (answers mean nothing)")
    source.add_argument("--torchscript", type=Path, help="a TorchScript image classifier of your own")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    p.add_argument("--labels", type=Path, help="class names: JSON list or TorchServe index_to_name.json")
    p.add_argument("--arch", default="resnet18", help="torchvision classification model (default resnet18)")
    p.add_argument("--model-name", default="resnet18")
    p.add_argument("--version", default="1.0")
    p.add_argument("--export-path", type=Path, default=DEFAULT_EXPORT_PATH)
    p.add_argument(
        "--model-config", type=Path, default=DEFAULT_MODEL_CONFIG, help="workers, batching, handler settings"
    )
    p.add_argument("--resize", type=int, help="shorter side before cropping (default: the weights' own, else 256)")
    p.add_argument("--crop", type=int, help="center crop (default: the weights' own, else 224)")
    p.add_argument("--mean", type=float, nargs=3, help="normalization mean (default ImageNet's)")
    p.add_argument("--std", type=float, nargs=3, help="normalization std (default ImageNet's)")
    p.add_argument("--force", action="store_true", help="overwrite an existing archive")
    args = p.parse_args(argv)
    if args.torchscript and not args.labels:
        p.error("--torchscript needs --labels")
    return args


def official_weights(arch: str) -> torchvision.models.WeightsEnum:
    try:
        return models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise BuildError(f"{arch} is not a torchvision classification model")


def preprocessing_of(weights: torchvision.models.WeightsEnum) -> Preprocessing:
    """The weights' own transforms, as torchvision defines them."""
    t = weights.transforms()
    return Preprocessing(
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
    )


def download_state_dict(weights: torchvision.models.WeightsEnum) -> tuple[dict, Path]:
    """torchvision's own download into torch's cache; on failure, say exactly how to get out."""
    file_name = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        state = weights.get_state_dict(progress=sys.stderr.isatty(), check_hash=True)
    except Exception as e:
        raise BuildError(
            f"Could not download the official weights {weights} ({type(e).__name__}: {e}).\n"
            f"Get {file_name} from {weights.url} on a connected machine, then either\n"
            f"  - put it at {cached} and run this again, or\n"
            f"  - build with:  --weights /path/to/{file_name}   (make run WEIGHTS=/path/to/{file_name})\n"
            "For an offline smoke run without real weights: --random-weights   (make run WEIGHTS=random);\n"
            "its answers are meaningless and say so."
        ) from None
    return state, cached


def load_state_dict_file(path: Path) -> dict:
    if not path.is_file():
        raise BuildError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A hash of the weights themselves, independent of how they were stored."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def eager_model(args: argparse.Namespace) -> tuple[torch.nn.Module, list[str], Preprocessing, dict]:
    """The eager model with its labels, preprocessing and the provenance of its weights."""
    weights = official_weights(args.arch)
    labels = read_labels(args.labels) if args.labels else list(weights.meta["categories"])
    preprocessing = preprocessing_of(weights)
    builder = models.get_model_builder(args.arch)
    if args.random_weights:
        torch.manual_seed(args.seed)
        model = builder(weights=None, num_classes=len(labels))
        provenance = {"weights": f"random(seed={args.seed})"}
    elif args.weights:
        model = builder(weights=None, num_classes=len(labels))
        model.load_state_dict(load_state_dict_file(args.weights))
        provenance = {"weights": f"file:{args.weights.name}", "weights_file_sha256": sha256_file(args.weights)}
    else:
        if args.labels:
            raise BuildError(
                "--labels goes with --weights, --torchscript or --random-weights, not the official weights"
            )
        state, cached = download_state_dict(weights)
        model = builder(weights=None)
        model.load_state_dict(state)
        provenance = {"weights": str(weights).split(".")[-1], "weights_file_sha256": sha256_file(cached)}
    model.eval()
    provenance["weights_sha256"] = state_dict_sha256(model)
    return model, labels, preprocessing, provenance


def script_and_check(model: torch.nn.Module, crop: int) -> torch.jit.ScriptModule:
    """Compile with torch.jit.script and prove it computes what the eager model computes."""
    scripted = torch.jit.script(model)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(2, 3, crop, crop, generator=generator)
    with torch.inference_mode():
        expected, actual = model(batch), scripted(batch)
    if not torch.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        raise BuildError(f"scripted model differs from eager (max diff {(expected - actual).abs().max():.3g})")
    return scripted


def load_torchscript(path: Path, num_classes: int, crop: int) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise BuildError(f"TorchScript file {path} does not exist")
    try:
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise BuildError(f"{path} is not a TorchScript model ({e})")
    with torch.inference_mode():
        out = scripted(torch.zeros(1, 3, crop, crop))
    if out.shape != (1, num_classes):
        raise BuildError(f"{path} gives output of shape {tuple(out.shape)}, but the labels name {num_classes} classes")
    return scripted


def save_torchscript(scripted: torch.jit.ScriptModule, path: Path) -> None:
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    path.write_bytes(buffer.getvalue())


def build(args: argparse.Namespace) -> Path:
    export_path = args.export_path.resolve()
    archive = export_path / f"{args.model_name}.mar"
    if archive.exists() and not args.force:
        raise BuildError(f"{archive} exists; pass --force to replace it")
    if not args.model_config.is_file():
        raise BuildError(f"model config {args.model_config} does not exist")

    if args.torchscript:
        labels = read_labels(args.labels)
        preprocessing = Preprocessing()
        provenance = {
            "weights": f"torchscript:{args.torchscript.name}",
            "weights_sha256": sha256_file(args.torchscript),
        }
        arch = "torchscript"
    else:
        model, labels, preprocessing, provenance = eager_model(args)
        arch = args.arch
    preprocessing = Preprocessing(
        resize=args.resize or preprocessing.resize,
        crop=args.crop or preprocessing.crop,
        mean=tuple(args.mean) if args.mean else preprocessing.mean,
        std=tuple(args.std) if args.std else preprocessing.std,
        interpolation=preprocessing.interpolation,
    )
    if preprocessing.crop > preprocessing.resize:
        raise BuildError(f"--crop {preprocessing.crop} is larger than --resize {preprocessing.resize}")

    with tempfile.TemporaryDirectory(prefix="build-archive-") as tmp:
        stage = Path(tmp) / "extra"
        stage.mkdir()
        model_file = Path(tmp) / MODEL_FILE
        if args.torchscript:
            scripted = load_torchscript(args.torchscript, len(labels), preprocessing.crop)
        else:
            scripted = script_and_check(model, preprocessing.crop)
        save_torchscript(scripted, model_file)
        provenance.update(
            arch=arch,
            num_classes=len(labels),
            model_sha256=sha256_file(model_file),
            torch=torch.__version__,
            torchvision=torchvision.__version__,
        )
        ModelCard(labels=labels, preprocessing=preprocessing, provenance=provenance).write(stage)
        shutil.copytree(HANDLER_PACKAGE, stage / "handler", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        export_path.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).with_name("torch-model-archiver")),
            "--model-name",
            args.model_name,
            "--version",
            args.version,
            "--serialized-file",
            str(model_file),
            "--handler",
            str(HANDLER_ENTRY),
            "--extra-files",
            str(stage),
            "--config-file",
            str(args.model_config),
            "--export-path",
            str(export_path),
            "--force",
        ]
        subprocess.run(command, check=True)
    print(f"built {archive} ({arch}, weights {provenance['weights']}, {len(labels)} classes)")
    return archive


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
