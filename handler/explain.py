"""Why did the model say that: an occlusion map for one class, from forward passes alone.

Occlusion (Captum's, the library TorchServe itself uses for explanations) hides one patch of the
model's input at a time and records how much the class's log-probability drops. It needs nothing
but `forward(batch) -> logits`, so it explains every archive kind alike: TorchScript fp32, int8,
other runtimes, and bring-your-own models whose insides are unknown. The hidden-patch images go
through the handler's own forward callable, `batch` of them per call, so the cost is bounded and
known in advance: (grid - 1)^2 masked images plus the unmasked one.

The result is a coarse grid in [0, 1] over the part of the upright photo the model sees (its
center crop), and a PNG of that photo with the grid drawn over it. Plain functions: no TorchServe
types, so the same code explains for any server.
"""

from __future__ import annotations

import base64
import difflib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from handler.errors import RequestError, Result
from handler.model_card import Preprocessing
from handler.preprocess import decode_for_model, resized_size
from handler.settings import HandlerSettings

Forward = Callable[[torch.Tensor], torch.Tensor]
log = logging.getLogger(__name__)

METHOD = "occlusion"
NOTE = (
    "sensitivity, not certainty: how much hiding each region lowers the model's score for this class; "
    "bright regions mattered most to this answer, whether or not the answer is right"
)
EXPLAIN_HEADER = "explain"  # TorchServe's frontend sets it to "True" on /explanations and KServe :explain
OVERLAY_SIDE = 448  # the overlay PNG's longer side, in pixels: enough to see, small enough to send
# Heat colour stops (value in [0, 1] -> RGB): dark blue, red, yellow, white.
_STOPS = np.array([0.0, 0.35, 0.7, 1.0])
_COLOURS = np.array([[20, 20, 120], [220, 30, 30], [250, 210, 40], [255, 255, 230]], dtype=np.float32)


def wants_explanation(headers: Mapping[str, object]) -> bool:
    """True for a request TorchServe routed from POST /explanations/{model}, /v1/models/{model}:explain
    or /v2/models/{model}/explain: its frontend adds the header explain: True to those, and explain: False
    after whatever a client sent to /predictions (read exactly as TorchServe's BaseHandler._is_explain does)."""
    return headers.get(EXPLAIN_HEADER) == "True"


def target_index(name: str, labels: list[str]) -> int:
    """A class named by its label (as the predictions spell it; case does not matter) or by its index."""
    if name.isdigit() and int(name) < len(labels):
        return int(name)
    folded = name.casefold()
    for index, label in enumerate(labels):
        if label.casefold() == folded:
            return index
    close = difflib.get_close_matches(name, labels, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise RequestError(
        f"unknown class {name[:100]!r} to explain: name it by its label exactly as the predictions' \"label\" "
        f"field spells it (case does not matter), or by its index from 0 to {len(labels) - 1}; "
        f"leave \"target\" out to explain the top class.{hint}",
        400,
        "UnknownClass",
    )


@dataclass(frozen=True)
class Saliency:
    grid: np.ndarray  # (rows, cols) in [0, 1], over the model's center crop
    forward_passes: int


def occlusion_saliency(forward: Forward, tensor: torch.Tensor, target: int, grid: int, batch: int) -> Saliency:
    """Captum's Occlusion over a grid x grid division of the (C, H, W) input: a 2x2-cell patch of the
    normalized mean colour (0 after normalization) slides one cell at a time, `batch` masked images
    per forward call. The score is the class's log-probability; positive drops, scaled so the
    largest is 1, are the saliency of each cell (Captum averages the patches covering a cell)."""
    from captum.attr import Occlusion  # imported on the first explanation: it pulls in matplotlib (~30 MiB)

    _, height, width = tensor.shape
    cell_h, cell_w = height // grid, width // grid
    passes = occlusion_passes(grid, height, width)
    size = chunk_size(passes, batch)

    def log_probability(x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if 1 < n < size:  # the last chunk, padded: a shape the model has already run (no recompilation)
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        return torch.log_softmax(torch.as_tensor(forward(x)).float()[:n], dim=1)

    with torch.inference_mode():
        attributions = Occlusion(log_probability).attribute(
            tensor.unsqueeze(0),
            sliding_window_shapes=(tensor.shape[0], 2 * cell_h, 2 * cell_w),
            strides=(tensor.shape[0], cell_h, cell_w),
            target=target,
            baselines=0.0,
            perturbations_per_eval=size,
            show_progress=False,
        )
    per_pixel = attributions[0].float().sum(dim=0, keepdim=True).unsqueeze(0)
    cells = torch.nn.functional.adaptive_avg_pool2d(per_pixel, (grid, grid))[0, 0].clamp(min=0).numpy()
    top = float(cells.max())
    scaled = cells / top if top > 0 else np.zeros_like(cells)
    return Saliency(scaled.astype(np.float32), forward_passes=passes)


def occlusion_passes(grid: int, height: int, width: int) -> int:
    """Forward passes for one explanation: every patch position, plus the unmasked image."""
    cell_h, cell_w = height // grid, width // grid
    rows = (height - 2 * cell_h) // cell_h + 1
    cols = (width - 2 * cell_w) // cell_w + 1
    return rows * cols + 1


def chunk_size(passes: int, batch: int) -> int:
    """Masked images per forward call: at most `batch`, spread evenly over the calls needed."""
    masked = max(1, passes - 1)
    calls = -(-masked // batch)
    return -(-masked // calls)


def crop_region(width: int, height: int, spec: Preprocessing) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the model's center crop, as fractions of the upright image's sides:
    the same arithmetic as preprocess.to_tensor, mapped back from the resized image."""
    resized_w, resized_h = resized_size(width, height, spec.resize)
    left = int(round((resized_w - spec.crop) / 2.0))
    top = int(round((resized_h - spec.crop) / 2.0))
    return left / resized_w, top / resized_h, spec.crop / resized_w, spec.crop / resized_h


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB float array, through the colour stops."""
    return np.stack([np.interp(values, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=-1)


def overlay_png(image: Image.Image, grid: np.ndarray, region: tuple[float, float, float, float]) -> bytes:
    """The upright photo (longer side OVERLAY_SIDE at most) with the saliency blended over the part the
    model sees, smoothly upsampled; what lies outside that part is dimmed, since the model never saw it."""
    photo = image.convert("RGB")
    photo.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE))
    base = np.asarray(photo, dtype=np.float32)
    out = base * 0.35
    left, top = round(region[0] * photo.width), round(region[1] * photo.height)
    right = min(photo.width, left + max(1, round(region[2] * photo.width)))
    bottom = min(photo.height, top + max(1, round(region[3] * photo.height)))
    heat_image = Image.fromarray(grid.astype(np.float32), mode="F").resize((right - left, bottom - top),
                                                                         Image.Resampling.BILINEAR)
    heat = np.clip(np.asarray(heat_image, dtype=np.float32), 0.0, 1.0)[..., None]
    alpha = 0.15 + 0.6 * heat
    inside = base[top:bottom, left:right]
    out[top:bottom, left:right] = inside * (1 - alpha) + heat_colours(heat[..., 0]) * alpha
    picture = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
    ImageDraw.Draw(picture).rectangle((left, top, right - 1, bottom - 1), outline=(255, 255, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def explanation(
    forward: Forward, image: Image.Image, tensor: torch.Tensor, spec: Preprocessing, target: dict, grid: int, batch: int
) -> dict[str, object]:
    """One image's explanation for one class (`target`: its label, index and probability), as JSON-ready data."""
    started = time.perf_counter()
    saliency = occlusion_saliency(forward, tensor, int(target["index"]), grid, batch)
    region = crop_region(image.width, image.height, spec)
    png = overlay_png(image, saliency.grid, region)
    return {
        "method": METHOD,
        "target": target,
        "rows": int(saliency.grid.shape[0]),
        "cols": int(saliency.grid.shape[1]),
        "grid": [[round(float(v), 4) for v in row] for row in saliency.grid],
        "region": dict(zip(("left", "top", "width", "height"), (round(v, 6) for v in region), strict=True)),
        "overlay_png": base64.b64encode(png).decode("ascii"),
        "forward_passes": saliency.forward_passes,
        "ms": round((time.perf_counter() - started) * 1000, 1),
        "note": NOTE,
    }


def target_of(logits: torch.Tensor, index: int | None, labels: list[str]) -> dict[str, object]:
    """The class to explain for one image (the named one, else its top class) with its probability."""
    probabilities = torch.softmax(logits.float(), dim=0)
    chosen = int(probabilities.argmax()) if index is None else index
    return {"label": labels[chosen], "index": chosen, "probability": round(float(probabilities[chosen]), 6)}


def with_explanations(answer: dict, protocol: str, explanations: list[dict | None]) -> dict:
    """A request's prediction answer with one explanation per image (None where the image failed):
    "explanations" beside "predictions" (KServe v1 explain's own key), or a v2 BYTES output of JSON texts."""
    if protocol == "v2":
        texts = [json.dumps(e, separators=(",", ":")) if e else "" for e in explanations]
        output = {"name": "explanation", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
        return {**answer, "outputs": [*answer["outputs"], output]}
    return {**answer, "explanations": explanations}


class ExplanationBudget:
    """A worker's bound on explanations, so they cannot starve the predictions that share it.

    At most `per_batch` explanation requests in one batch, and explanations may take at most `share`
    of the worker's wall time: the budget earns `share` seconds per second (up to `burst_s`) and each
    explanation spends its own duration. Beyond either, the request gets an immediate 503."""

    def __init__(self, share: float, per_batch: int, burst_s: float = 1.0) -> None:
        self.share, self.per_batch, self.burst_s = share, per_batch, burst_s
        self.balance_s = burst_s
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def admit(self, already_in_batch: int) -> RequestError | None:
        """None if one more explanation may run in this batch, else the 503 to answer."""
        with self.lock:
            now = time.monotonic()
            self.balance_s = min(self.burst_s, self.balance_s + (now - self.last) * self.share)
            self.last = now
            if already_in_batch >= self.per_batch:
                return busy(f"this worker explains at most {self.per_batch} image(s) at a time")
            if self.balance_s <= 0:
                wait = -self.balance_s / self.share
                return busy(
                    f"this worker already spends its share ({self.share:.0%}) of time on explanations; "
                    f"try again in {wait:.1f} s"
                )
            return None

    def spend(self, seconds: float) -> None:
        with self.lock:
            self.balance_s -= seconds


def busy(why: str) -> RequestError:
    return RequestError(f"explanations are busy: {why}; predictions are not affected", 503, "ExplanationBusy")


class Explainer:
    """What the handler asks of this module: check an explanation request before its image is decoded,
    reserve it one of the batch's explanations once the image is decoded, then explain the image."""

    def __init__(self, settings: HandlerSettings, labels: list[str], spec: Preprocessing) -> None:
        self.settings, self.labels, self.spec = settings, labels, spec
        self.budget = ExplanationBudget(settings.explain_share, settings.explain_per_batch)
        crop = spec.crop
        self.chunk = chunk_size(occlusion_passes(settings.explain_grid, crop, crop), settings.explain_batch)

    def target(self, name: str | None, images: int) -> int | None:
        """The class index the request names (None: the image's top class). RequestError: an unknown
        class (400) or more than one image (413)."""
        index = target_index(name, self.labels) if name is not None else None
        if images != 1:
            raise RequestError(
                f"an explanation request explains one image; this one has {images}: send each in its own request",
                413,
                "TooManyImages",
            )
        return index

    def reserve(self, already_in_batch: int) -> RequestError | None:
        """None if the worker's bound lets one more explanation run in this batch, else the 503 to answer.
        Asked only for a request whose image decoded: one that fails on its image takes no explanation."""
        return self.budget.admit(already_in_batch)

    def explain(
        self, forward: Forward, data: bytes, tensor: torch.Tensor, logits: torch.Tensor, index: int | None
    ) -> Result[dict[str, object]]:
        """One image: its bytes decoded upright again for the overlay, its model input masked through
        `forward`. Whatever fails here fails this request alone (500), never the batch."""
        started = time.perf_counter()
        try:
            image = decode_for_model(data, self.spec, self.settings.max_pixels)
            target = target_of(logits, index, self.labels)
            s = self.settings
            return Result(explanation(forward, image, tensor, self.spec, target, s.explain_grid, s.explain_batch))
        except Exception as e:  # noqa: BLE001 - one failed explanation must not fail the predictions beside it
            log.exception("explanation failed")
            return Result(error=RequestError(f"the explanation failed ({type(e).__name__})", 500, "ExplanationFailed"))
        finally:
            self.budget.spend(time.perf_counter() - started)
