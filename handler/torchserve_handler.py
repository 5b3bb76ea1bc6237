"""TorchServe entry point: thin glue from TorchServe's batch to the plain functions.

One straight path per batch: for each request, bytes -> image -> tensor (errors stay with
their request); then one forward pass over the good ones; then top-k and JSON per request.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from handler.errors import RequestError
from handler.images import decode_image
from handler.model_card import MODEL_FILE, ModelCard
from handler.payload import error_reply, image_bytes, reply, requested_topk
from handler.preprocess import to_tensor
from handler.topk import top_k

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = "this model has random weights (a test build): its predictions mean nothing"
DEFAULTS = {"topk": 3, "max_pixels": 50_000_000, "intra_op_threads": "auto"}


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


class ImageClassifierHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        yaml_config = context.model_yaml_config or {}
        self.settings = {**DEFAULTS, **(yaml_config.get("handler") or {})}
        workers = int(yaml_config.get("maxWorkers") or yaml_config.get("minWorkers") or 1)
        threads = intra_op_threads(self.settings["intra_op_threads"], workers, available_cores())
        torch.set_num_threads(threads)

        self.card = ModelCard.read(model_dir)
        self.card.verify_model_file(model_dir / MODEL_FILE)
        self.model = torch.jit.load(str(model_dir / MODEL_FILE), map_location="cpu").eval()
        self.topk_default = int(self.settings["topk"])
        self.max_pixels = int(self.settings["max_pixels"])
        manifest = context.manifest.get("model", {})
        self.model_info = {
            "name": manifest.get("modelName"),
            "version": manifest.get("modelVersion"),
            "arch": self.card.provenance.get("arch"),
            "weights": self.card.provenance.get("weights"),
            "random_weights": self.card.random_weights,
        }
        started = time.perf_counter()
        self.predict(torch.zeros(1, 3, self.card.preprocessing.crop, self.card.preprocessing.crop))
        log.info(
            "loaded %s (%s), %d intra-op threads for %d worker(s) on %d cores, warm-up %.0f ms",
            self.model_info["name"],
            self.model_info["weights"],
            threads,
            workers,
            available_cores(),
            (time.perf_counter() - started) * 1000,
        )
        self.initialized = True

    def decode(self, request: dict, headers: dict[str, str]) -> tuple[int, torch.Tensor]:
        """One request to (top-k, input tensor). Raises RequestError for that request only."""
        k = requested_topk(request, headers, self.topk_default, len(self.card.labels))
        spec = self.card.preprocessing
        image = decode_image(image_bytes(request), self.max_pixels, min_side=2 * spec.resize)
        return k, to_tensor(image, spec)

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def encode(self, predictions: list[dict[str, object]], request: dict | None = None, request_id=None) -> str:
        answer: dict[str, object] = {"predictions": predictions, "model": self.model_info}
        if self.card.random_weights:
            answer["warning"] = RANDOM_WEIGHTS_WARNING
        # KServe v1/v2 requests get v1/v2-shaped answers (handler/payload.py).
        return json.dumps(reply(request or {}, answer, self.model_info, request_id), separators=(",", ":"))

    def handle(self, data: list[dict], context) -> list[str]:
        answers: list[str] = [""] * len(data)
        good: list[tuple[int, int, torch.Tensor]] = []
        for i, request in enumerate(data):
            context.set_response_content_type(i, "application/json")
            try:
                k, tensor = self.decode(request, context.request_processor[i].get_request_properties())
                good.append((i, k, tensor))
            except RequestError as error:
                context.set_response_status(error.status, error.message, idx=i)
                answers[i] = json.dumps(error_reply(request, error.to_json()))
        if good:
            logits = self.predict(torch.stack([tensor for _, _, tensor in good]))
            rows = top_k(logits, [k for _, k, _ in good], self.card.labels)
            for (i, _, _), predictions in zip(good, rows, strict=True):
                answers[i] = self.encode(predictions, data[i], context.get_request_id(i))
        log.info("batch of %d: %d answered, %d refused", len(data), len(good), len(data) - len(good))
        return answers
