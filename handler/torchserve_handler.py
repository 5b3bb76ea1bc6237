"""TorchServe entry point: thin glue from TorchServe's batch to the plain functions.

One straight path per batch, in TorchServe's own words: preprocess (each request parsed once,
then decoded to its input tensor; errors stay with their request), inference (one forward pass
over the accepted ones), postprocess (top-k and JSON per request).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from handler.batch import Batch
from handler.cores import ThreadPolicy, available_cores, configured_workers
from handler.errors import RequestError
from handler.model_card import MODEL_FILE, ArchiveIntegrityError, ModelCard
from handler.preprocess import model_input
from handler.request import Limits, ParsedRequest, error_reply, parse_request, reply
from handler.runtime import load_model
from handler.settings import HandlerSettings
from handler.topk import top_k

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = "this model has random weights (a test build): its predictions mean nothing"
JSON = "application/json"


class ImageClassifierHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        yaml_config = context.model_yaml_config or {}
        self.settings = HandlerSettings.from_yaml(yaml_config)
        cores = available_cores()
        workers = configured_workers(yaml_config, cores)
        self.threads = ThreadPolicy.from_settings(self.settings.intra_op_threads, model_dir, workers, cores)
        self.card = ModelCard.read(model_dir)
        # A model with fewer classes than the default top-k answers all of them (a 2-class model: 2).
        default_topk = min(self.settings.topk, len(self.card.labels))
        self.limits = Limits(default_topk, len(self.card.labels), self.settings.max_image_bytes)
        manifest = context.manifest.get("model", {})
        self.model_info = {
            "name": manifest.get("modelName"),
            "version": manifest.get("modelVersion"),
            "arch": self.card.provenance.arch,
            "weights": self.card.provenance.weights,
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
        self.model = load_model(model_dir / MODEL_FILE, self.card.provenance, self.settings.optimize)
        started = time.perf_counter()
        self.warm_up(int(context.system_properties.get("batch_size") or 1))
        log.info(
            "loaded %s (%s), %s intra-op threads for %d worker(s) on %d cores, warm-up %.0f ms",
            self.model_info["name"],
            self.model_info["weights"],
            self.threads.describe(),
            workers,
            cores,
            (time.perf_counter() - started) * 1000,
        )
        self.initialized = True

    def warm_up(self, batch_size: int) -> None:
        """First calls compile and specialise the graph (the profiling executor needs two);
        do them now, for every batch size and thread count that can occur, not on a request."""
        crop = self.card.preprocessing.crop
        for _ in self.threads.each_count():
            for n in sorted({1, max(1, batch_size)}):
                for _ in range(2):
                    self.inference(torch.zeros(n, 3, crop, crop))

    def handle(self, data: list[dict], context) -> list[str]:
        started = time.perf_counter()
        with self.threads.batch():
            batch = self.preprocess(data, context)
            if batch.accepted:
                self.threads.grow()
                self.postprocess(batch, self.inference(batch.stacked_inputs()))
        log.info(
            "batch of %d: %d answered, %d refused in %.1f ms",
            len(data),
            len(batch.accepted),
            batch.refused,
            (time.perf_counter() - started) * 1000,
        )
        return batch.replies()

    def preprocess(self, data: list[dict], context) -> Batch:
        """Each request parsed once and decoded to its input tensor; what is wrong with one
        request is answered at once, for that request alone, in its own protocol's shape."""
        batch = Batch.of_size(len(data))
        for i, request in enumerate(data):
            context.set_response_content_type(i, JSON)
            headers = context.request_processor[i].get_request_properties()
            if headers.get("describe") == "True":  # TorchServe's customized describe (or a client's header)
                batch.answers[i] = json.dumps(self.describe())
                batch.described += 1
                continue
            parsed = parse_request(request, headers, self.limits, context.get_request_id(i))
            error = self.refusal or parsed.error
            if error is None:
                try:
                    tensor = model_input(parsed.images[0], self.card.preprocessing, self.settings.max_pixels)
                    batch.accepted.append((i, parsed, tensor))
                except RequestError as e:
                    error = e
            if error is not None:
                context.set_response_status(error.status, error.message, idx=i)
                batch.answers[i] = json.dumps(error_reply(parsed, error))
        return batch

    @torch.inference_mode()
    def inference(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def postprocess(self, batch: Batch, logits: torch.Tensor) -> None:
        """Each accepted request's own top-k, as JSON in its own protocol's shape."""
        rows = top_k(logits, [parsed.topk for _, parsed, _ in batch.accepted], self.card.labels)
        for (i, parsed, _), predictions in zip(batch.accepted, rows, strict=True):
            batch.answers[i] = self.encode(predictions, parsed)

    def encode(self, predictions: list[dict[str, object]], parsed: ParsedRequest) -> str:
        answer: dict[str, object] = {"predictions": predictions, "model": self.model_info}
        if self.card.random_weights:
            answer["warning"] = RANDOM_WEIGHTS_WARNING
        return json.dumps(reply(parsed, answer, self.model_info), separators=(",", ":"))

    def describe(self) -> dict[str, object]:
        """GET /models/{name}?customized=true: what this worker serves, and whether it does."""
        return {
            "model": self.model_info,
            "serving": self.refusal is None,
            "problem": self.refusal.message if self.refusal else None,
            "classes": len(self.card.labels),
            "preprocessing": self.card.preprocessing.to_dict(),
            "settings": self.settings.to_dict(),
        }
