"""Export model.pt for another runtime (ONNX Runtime, OpenVINO) and prove the export computes the same.

model.pt stays in the archive as the source of truth; model.onnx is exported from it (dynamic batch
axis) and run here exactly as the handler will run it (handler/runtime.py) on photos (the sample
photos, or --calibration DIR on a runtime-only install). fp32 must match TorchScript within
MAX_FP32_LOGIT_DIFFERENCE or the build fails; bf16 and ONNX Runtime int8 (onnx_quantize.py: model.onnx
is then the int8 graph) are opt-ins whose top-1 agreement is printed.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from handler.model_card import MODEL_FILE, ONNX_FILE, TORCHSCRIPT, ModelCard, Provenance
from handler.runtime import ONNXRUNTIME, OPENVINO, PACKAGES, RUNTIMES, load_model
from service.archive.agreement import Agreement, logit_agreement
from service.archive.calibration import CalibrationPhotos, calibration_batches
from service.archive.errors import BuildError

MAX_FP32_LOGIT_DIFFERENCE = 1e-4
PRECISIONS = ("fp32", "bf16")
ONNX_OPSET = 17
INPUT_NAME = "input"  # the exported graph's input
# CPU flags (/proc/cpuinfo) under which OpenVINO's CPU plugin runs bf16 natively.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them (empty where it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def check_runtime_request(runtime: str, precision: str, quantize: str | None) -> None:
    """Refusals before any work: unknown names, combinations that do not exist, a missing package."""
    if runtime not in RUNTIMES:
        raise BuildError(f"--runtime {runtime}: choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise BuildError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if quantize and runtime not in (TORCHSCRIPT, ONNXRUNTIME):
        raise BuildError(f"--quantize int8 runs on --runtime torchscript or onnxruntime, not {runtime}")
    if precision == "bf16":
        if runtime != OPENVINO:
            raise BuildError(f"--precision bf16 runs on --runtime openvino, not {runtime}")
        if not cpu_has_bf16():
            raise BuildError(
                "--precision bf16: this CPU has no native bf16 (none of the CPU flags "
                f"{', '.join(BF16_FLAGS)} in /proc/cpuinfo), so OpenVINO would not run bf16 here; "
                "build fp32, or --quantize int8 for speed"
            )
    for package in ("onnx", PACKAGES.get(runtime)) if runtime != TORCHSCRIPT else ():
        try:
            importlib.import_module(package)
        except ImportError:
            raise BuildError(
                f"--runtime {runtime} needs the Python package {package}, which is not installed here: "
                "pip install -r requirements.txt (it pins the tested version)"
            ) from None


def export_onnx(model_file: Path, onnx_file: Path, crop: int) -> None:
    """model.pt to ONNX, batch size free. no_grad, not inference_mode: the exporter traces with autograd."""
    scripted = torch.jit.load(str(model_file), map_location="cpu").eval()
    example = torch.zeros(2, 3, crop, crop)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on TorchScript input formats and deprecations
        torch.onnx.export(
            scripted,
            (example,),
            str(onnx_file),
            input_names=[INPUT_NAME],
            output_names=["logits"],
            dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def compare_on_photos(model_dir: Path, provenance: Provenance, card: ModelCard, photos: CalibrationPhotos) -> Agreement:
    """TorchScript (as served) against the exported model as the handler will run it, on the photos
    and a few crops of each, in batches of several images and of one."""
    reference = load_model(model_dir / MODEL_FILE, dataclasses.replace(provenance, runtime=TORCHSCRIPT))
    exported = load_model(model_dir / MODEL_FILE, provenance)
    data = torch.cat(calibration_batches(card.preprocessing, crops_per_photo=2, seed=7, photos=photos.paths))
    with torch.inference_mode():
        expected = reference(data)
        actual = torch.cat([exported(data[:-1]), exported(data[-1:])])
    return logit_agreement(expected, actual, provenance.weights)


def export_for_runtime(
    model_file: Path, card: ModelCard, photos: CalibrationPhotos
) -> tuple[dict[str, Path], Agreement, str | None]:
    """The exported model files (name -> path, in model_file's folder), how the export agrees with
    TorchScript and, for int8, how it was calibrated; BuildError if an fp32 export differs by more
    than MAX_FP32_LOGIT_DIFFERENCE."""
    provenance = card.provenance
    folder = model_file.parent
    calibration = None
    if provenance.quantization:  # onnxruntime int8: quantize the fp32 export, serve the int8 graph
        from service.archive.onnx_quantize import quantize_onnx_int8

        fp32_file = folder / f"fp32-{ONNX_FILE}"
        export_onnx(model_file, fp32_file, card.preprocessing.crop)
        calibration = quantize_onnx_int8(fp32_file, folder / ONNX_FILE, card.preprocessing, photos, INPUT_NAME)
        fp32_file.unlink()
    else:
        export_onnx(model_file, folder / ONNX_FILE, card.preprocessing.crop)
    with tempfile.TemporaryDirectory(prefix="export-check-") as tmp:
        for name in (MODEL_FILE, ONNX_FILE):
            shutil.copy(folder / name, Path(tmp) / name)
        agreement = compare_on_photos(Path(tmp), provenance, card, photos)
    what = f"{provenance.served_runtime} {provenance.served_precision}"
    if provenance.served_precision == "fp32" and not agreement.max_logit_difference <= MAX_FP32_LOGIT_DIFFERENCE:
        raise BuildError(
            f"the {what} export differs from TorchScript on {photos.what}: max logit difference "
            f"{agreement.max_logit_difference:.3g} > {MAX_FP32_LOGIT_DIFFERENCE:g}; not building it"
        )
    return {ONNX_FILE: folder / ONNX_FILE}, agreement, calibration
