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
calibrated on the sample photos (scripts/sample_photos.py) and augmented crops of them.
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
# torch 2.14 also marks eager-mode quantization as deprecated; it is what torchvision's int8 models use.
warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)


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
    p.add_argument("--quantize", choices=["int8"], help="int8 model for the x86 quantized engine")
    args = p.parse_args(argv)
    if args.torchscript and not args.labels:
        p.error("--torchscript needs --labels")
    if args.quantize and args.torchscript:
        p.error("--quantize needs a torchvision --arch, not --torchscript")
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
    """Compile with torch.jit.script and prove it computes what the eager model computes
    (for an int8 model: the scripted int8 model against the eager int8 model)."""
    scripted = torch.jit.script(model)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(2, 3, crop, crop, generator=generator)
    with torch.inference_mode():
        expected, actual = model(batch), scripted(batch)
    if not torch.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        raise BuildError(f"scripted model differs from eager (max diff {(expected - actual).abs().max():.3g})")
    return scripted


QUANTIZED_ENGINE = "x86"


def calibration_batches(preprocessing: Preprocessing, crops_per_photo: int = 8, seed: int = 0) -> list[torch.Tensor]:
    """The sample photos and augmented crops of them (random resized crops, flips), preprocessed
    exactly as the handler does, for post-training calibration."""
    from PIL import Image, ImageOps

    from handler.images import decode_image
    from handler.preprocess import to_tensor
    from service.photos import photos

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for path in photos().values():
        image = decode_image(path.read_bytes(), 50_000_000)
        tensors = [to_tensor(image, preprocessing)]
        for _ in range(crops_per_photo):
            w, h = image.size
            scale = 0.35 + 0.65 * torch.rand(1, generator=generator).item()
            cw, ch = max(32, int(w * scale)), max(32, int(h * scale))
            x = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            y = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            crop: Image.Image = image.crop((x, y, x + cw, y + ch))
            if torch.rand(1, generator=generator).item() < 0.5:
                crop = ImageOps.mirror(crop)
            tensors.append(to_tensor(crop, preprocessing))
        batches.append(torch.stack(tensors))
    return batches


def quantize_int8(model: torch.nn.Module, arch: str, num_classes: int, preprocessing: Preprocessing):
    """Post-training static quantization (x86 engine) of an fp32 torchvision model:
    fuse conv+bn+relu, observe activations on calibration images, convert to int8."""
    from torchvision.models import quantization as qmodels

    if not hasattr(qmodels, arch):
        raise BuildError(f"--quantize int8 supports {', '.join(qmodels.__all__)}-style models, not {arch}")
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    quantizable = getattr(qmodels, arch)(weights=None, quantize=False, num_classes=num_classes)
    quantizable.load_state_dict(model.state_dict())
    quantizable.eval()
    quantizable.fuse_model(is_qat=False)
    quantizable.qconfig = torch.ao.quantization.get_default_qconfig(QUANTIZED_ENGINE)
    torch.ao.quantization.prepare(quantizable, inplace=True)
    batches = calibration_batches(preprocessing)
    with torch.inference_mode():
        for batch in batches:
            quantizable(batch)
    torch.ao.quantization.convert(quantizable, inplace=True)
    calibration = f"post-training static, {sum(len(b) for b in batches)} sample photos and crops"
    return quantizable.eval(), calibration


def pretrained_int8(arch: str) -> tuple[torch.nn.Module, dict]:
    """torchvision's own pre-quantized weights (downloaded), e.g. ResNet18_QuantizedWeights."""
    from torchvision.models import quantization as qmodels

    try:
        weights = models.get_model_weights(f"quantized_{arch}").DEFAULT
    except (ValueError, KeyError):
        raise BuildError(f"torchvision has no pre-quantized weights for {arch}; use --weights FILE --quantize int8")
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    try:
        model = getattr(qmodels, arch)(weights=weights, quantize=True)
    except Exception as e:
        raise BuildError(
            f"Could not download the pre-quantized weights {weights} ({type(e).__name__}: {e}).\n"
            f"Build from fp32 weights instead: --weights /path/to/resnet18-f37072fd.pth --quantize int8\n"
            "(post-training calibration on the sample photos), or --random-weights --quantize int8."
        ) from None
    torch.backends.quantized.engine = QUANTIZED_ENGINE  # the builder switches to fbgemm
    file_name = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    provenance = {
        "weights": str(weights).split(".")[-1],
        "weights_file_sha256": sha256_file(cached) if cached.is_file() else None,
        "calibration": f"torchvision pre-quantized ({weights.meta.get('backend')})",
    }
    return model.eval(), provenance


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
    elif args.quantize and not (args.weights or args.random_weights):
        weights = official_weights(args.arch)
        if args.labels:
            raise BuildError("--labels goes with --weights or --random-weights, not the official weights")
        model, provenance = pretrained_int8(args.arch)
        labels, preprocessing, arch = list(weights.meta["categories"]), preprocessing_of(weights), args.arch
        provenance["weights_sha256"] = provenance["weights_file_sha256"]
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
    if args.quantize:
        if "calibration" not in provenance:  # fp32 weights: calibrate with the final preprocessing
            model, provenance["calibration"] = quantize_int8(model, arch, len(labels), preprocessing)
        provenance.update(quantization=args.quantize, quantized_engine=QUANTIZED_ENGINE)

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
