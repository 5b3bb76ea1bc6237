"""TorchServe entry point: thin glue from TorchServe's batch to the plain functions.

One straight path per batch: for each request, bytes -> image -> tensor (errors stay with
their request); then one forward pass over the good ones; then top-k and JSON per request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from handler.cores import CoreBudget
from handler.errors import RequestError
from handler.images import decode_image
from handler.model_card import MODEL_FILE, ArchiveIntegrityError, ModelCard
from handler.payload import error_reply, image_bytes, reply, requested_topk
from handler.preprocess import to_tensor
from handler.topk import top_k

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = "this model has random weights (a test build): its predictions mean nothing"
DEFAULTS = {
    "topk": 3,
    "max_pixels": 50_000_000,
    "max_image_bytes": 30 * 2**20,
    "intra_op_threads": "auto",
    "optimize": True,
}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def intra_op_threads(setting: object, workers: int, cores: int) -> int:
    """Threads per worker so that workers x threads never exceeds the cores."""
    if setting in (None, "auto"):
        return max(1, cores // max(1, workers))
    return max(1, int(setting))  # type: ignore[arg-type]


def configured_workers(yaml_config: dict, cores: int) -> int:
    """The model's worker count; without minWorkers/maxWorkers TorchServe starts one per core."""
    return int(yaml_config.get("maxWorkers") or yaml_config.get("minWorkers") or cores)


def shared_budget(model_dir: Path, cores: int) -> CoreBudget | None:
    """The model's core budget: lock files in its directory (shared by all its workers), else in a
    temporary directory named after it; None (fixed threads) if neither can be written."""
    digest = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    for directory in (model_dir / ".cores", Path(tempfile.gettempdir()) / f"ts-cores-{digest}"):
        try:
            return CoreBudget(directory, cores)
        except OSError as e:
            log.warning("cannot keep the core budget in %s (%s)", directory, e)
    return None


def load_model(model_file: Path, provenance: dict, optimize: bool = True) -> torch.jit.ScriptModule:
    """Load the archive's TorchScript model, prepared for CPU inference.

    fp32: torch.jit.optimize_for_inference (freeze: weights become constants, batch norm folded
    into convolutions; oneDNN convolutions with prepacked weights), about 15 % faster per image.
    int8: the quantized engine the archive was built for, then freeze.
    """
    engine = provenance.get("quantized_engine")
    if engine:
        torch.backends.quantized.engine = engine
    model = torch.jit.load(str(model_file), map_location="cpu").eval()
    if not optimize:
        return model
    if engine:
        return torch.jit.freeze(model)
    return torch.jit.optimize_for_inference(model)


class ImageClassifierHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        yaml_config = context.model_yaml_config or {}
        self.settings = {**DEFAULTS, **(yaml_config.get("handler") or {})}
        cores = available_cores()
        workers = configured_workers(yaml_config, cores)
        setting = self.settings["intra_op_threads"]
        # "shared": the workers share the cores batch by batch (CoreBudget); "auto": a fixed
        # cores // workers threads each; a number: that many threads each.
        self.budget = shared_budget(model_dir, cores) if setting == "shared" else None
        fixed = "auto" if setting == "shared" else setting  # no budget: fall back to the fixed rule
        threads = cores if self.budget else intra_op_threads(fixed, workers, cores)
        self.threads = threads
        torch.set_num_threads(threads)

        self.card = ModelCard.read(model_dir)
        self.topk_default = int(self.settings["topk"])
        self.max_pixels = int(self.settings["max_pixels"])
        self.max_image_bytes = int(self.settings["max_image_bytes"])
        manifest = context.manifest.get("model", {})
        self.model_info = {
            "name": manifest.get("modelName"),
            "version": manifest.get("modelVersion"),
            "arch": self.card.provenance.get("arch"),
            "weights": self.card.provenance.get("weights"),
            "random_weights": self.card.random_weights,
        }
        self.refusal: RequestError | None = None
        try:
            self.card.verify_model_file(model_dir / MODEL_FILE)
        except ArchiveIntegrityError as e:
            # Load, but answer every request with the reason. Failing the worker instead makes
            # TorchServe restart it forever while requests wait in its queue with no answer.
            log.error("%s", e)
            self.refusal = RequestError(f"{e}; rebuild it with scripts/build_archive.py", 503, "ArchiveIntegrityError")
            self.initialized = True
            return
        self.model = load_model(model_dir / MODEL_FILE, self.card.provenance, bool(self.settings["optimize"]))
        started = time.perf_counter()
        self.warm_up(int(context.system_properties.get("batch_size") or 1))
        log.info(
            "loaded %s (%s), %s intra-op threads for %d worker(s) on %d cores, warm-up %.0f ms",
            self.model_info["name"],
            self.model_info["weights"],
            f"1 to {cores} shared" if self.budget else threads,
            workers,
            cores,
            (time.perf_counter() - started) * 1000,
        )
        self.initialized = True

    def decode(self, request: dict, headers: dict[str, str]) -> tuple[int, torch.Tensor]:
        """One request to (top-k, input tensor). Raises RequestError for that request only."""
        k = requested_topk(request, headers, self.topk_default, len(self.card.labels))
        spec = self.card.preprocessing
        image = decode_image(image_bytes(request, self.max_image_bytes), self.max_pixels, min_side=2 * spec.resize)
        return k, to_tensor(image, spec)

    def warm_up(self, batch_size: int) -> None:
        """First calls compile and specialise the graph (the profiling executor needs two);
        do them now, for every batch size and thread count that can occur, not on a request."""
        crop = self.card.preprocessing.crop
        thread_counts = range(1, self.threads + 1) if self.budget else [self.threads]
        for threads in thread_counts:
            self.set_threads(threads)
            for n in sorted({1, max(1, batch_size)}):
                for _ in range(2):
                    self.predict(torch.zeros(n, 3, crop, crop))
        self.set_threads(self.threads)

    def set_threads(self, threads: int) -> None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def encode(self, predictions: list[dict[str, object]], request: dict | None = None, request_id=None) -> str:
        answer: dict[str, object] = {"predictions": predictions, "model": self.model_info}
        if self.card.random_weights:
            answer["warning"] = RANDOM_WEIGHTS_WARNING
        # KServe v1/v2 requests get v1/v2-shaped answers (handler/payload.py).
        return json.dumps(reply(request or {}, answer, self.model_info, request_id), separators=(",", ":"))

    def describe(self) -> dict[str, object]:
        """GET /models/{name}?customized=true: what this worker serves, and whether it does."""
        return {
            "model": self.model_info,
            "serving": self.refusal is None,
            "problem": self.refusal.message if self.refusal else None,
            "classes": len(self.card.labels),
            "preprocessing": self.card.preprocessing.to_dict(),
            "settings": {k: self.settings[k] for k in ("topk", "max_pixels", "max_image_bytes", "intra_op_threads")},
        }

    def refuse(self, i: int, request: dict, error: RequestError, context) -> str:
        context.set_response_status(error.status, error.message, idx=i)
        return json.dumps(error_reply(request, error.to_json()))

    def handle(self, data: list[dict], context) -> list[str]:
        if self.budget is None:
            return self._handle(data, context)
        self.budget.acquire_one()
        # Decode on the one core held. Threads left over from the last forward pass would make
        # every elementwise op wait for a thread whose core another worker is using.
        self.set_threads(1)
        try:
            return self._handle(data, context)
        finally:
            self.budget.release()

    def _handle(self, data: list[dict], context) -> list[str]:
        started = time.perf_counter()
        answers: list[str] = [""] * len(data)
        good: list[tuple[int, int, torch.Tensor]] = []
        described = 0
        for i, request in enumerate(data):
            context.set_response_content_type(i, "application/json")
            headers = context.request_processor[i].get_request_properties()
            if headers.get("describe") == "True":  # TorchServe's customized describe (or a client's header)
                answers[i] = json.dumps(self.describe())
                described += 1
                continue
            if self.refusal is not None:
                answers[i] = self.refuse(i, request, self.refusal, context)
                continue
            try:
                k, tensor = self.decode(request, headers)
                good.append((i, k, tensor))
            except RequestError as error:
                answers[i] = self.refuse(i, request, error, context)
        if good:
            if self.budget is not None:
                self.set_threads(self.budget.grow())
            logits = self.predict(torch.stack([tensor for _, _, tensor in good]))
            rows = top_k(logits, [k for _, k, _ in good], self.card.labels)
            for (i, _, _), predictions in zip(good, rows, strict=True):
                answers[i] = self.encode(predictions, data[i], context.get_request_id(i))
        log.info(
            "batch of %d: %d answered, %d refused in %.1f ms",
            len(data),
            len(good),
            len(data) - len(good) - described,
            (time.perf_counter() - started) * 1000,
        )
        return answers
