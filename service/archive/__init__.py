"""Build a TorchServe archive (.mar) of a TorchScript image classifier, as a library.

The steps, one module each: choose the model and its weights (sources.py), capture the
preprocessing they were trained with (builder.py), quantize to int8 if asked (quantize.py, with
calibration photos from calibration.py), then script and pack (pack.py). scripts/build_archive.py
is the command line over `build()`. Only requirements.txt packages are imported on this path.
"""

from __future__ import annotations

import warnings

# torch 2.14 marks torch.jit as deprecated; TorchServe 0.12 still loads TorchScript.
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
# torch 2.14 also marks eager-mode quantization as deprecated; it is what torchvision's int8 models use.
warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)

from service.archive.builder import BuildRequest, build  # noqa: E402
from service.archive.errors import BuildError  # noqa: E402

__all__ = ["BuildError", "BuildRequest", "build"]
