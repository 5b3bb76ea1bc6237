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

from handler.answer import ImageAnswer, error_reply, first_failure, reply
from handler.batch import Batch
from handler.cores import ThreadPolicy, available_cores, configured_workers
from handler.errors import RequestError
from handler.explain import Explainer, wants_explanation, with_explanations
from handler.metrics import HandlerMetrics
from handler.model_card import MODEL_FILE, TORCHSCRIPT, ArchiveIntegrityError, ModelCard
from handler.preprocess import decode_for_model, to_tensor
from handler.request import Limits, ParsedRequest, parse_request
from handler.runtime import RuntimeMissingError, load_model
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
        self.limits = Limits(
            default_topk, len(self.card.labels), self.settings.max_image_bytes, self.settings.max_images_per_request
        )
        self.explainer = Explainer(self.settings, self.card.labels, self.card.preprocessing)
        manifest = context.manifest.get("model", {})
        self.model_info = {
            "name": manifest.get("modelName"),
            "version": manifest.get("modelVersion"),
            "arch": self.card.provenance.arch,
            "weights": self.card.provenance.weights,
            "random_weights": self.card.random_weights,
            "runtime": self.card.provenance.served_runtime,
            "precision": self.card.provenance.served_precision,
        }
        self.refusal: RequestError | None = None
        self.metrics = HandlerMetrics.from_context(context)
        self.metrics.start()
        try:
            self.card.verify_model_files(model_dir)
            self.model = load_model(model_dir / MODEL_FILE, self.card.provenance, self.settings.optimize)
        except (ArchiveIntegrityError, RuntimeMissingError) as e:
            # Load, but answer every request with the reason. Failing the worker instead makes
            # TorchServe restart it forever while requests wait in its queue with no answer.
            log.error("%s", e)
            if isinstance(e, ArchiveIntegrityError):
                self.refusal = RequestError(f"{e}; rebuild it with scripts/build_archive.py", 503, type(e).__name__)
            else:
                self.refusal = RequestError(str(e), 503, "RuntimeMissing")
            self.initialized = True
            return
        self.model_info["precision"] = self.model.precision  # what the runtime really chose
        if self.model.runtime != TORCHSCRIPT:
            self.threads.runtime_runs_model()
        self.metrics.runtime(self.model_info["runtime"], self.model_info["precision"])
        started = time.perf_counter()
        self.warm_up(int(context.system_properties.get("batch_size") or 1))
        log.info(
            "loaded %s (%s) on %s %s, %s intra-op threads for %d worker(s) on %d cores, warm-up %.0f ms",
            self.model_info["name"],
            self.model_info["weights"],
            self.model_info["runtime"],
            self.model_info["precision"],
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
            for n in sorted({1, max(1, batch_size), self.explainer.chunk}):
                for _ in range(2):
                    self.inference(torch.zeros(n, 3, crop, crop))

    def handle(self, data: list[dict], context) -> list[str]:
        started = time.perf_counter()
        with self.threads.batch():
            batch = self.preprocess(data, context)
            if batch.accepted:
                with self.metrics.forward(len(batch.inputs), self.threads.grow()):
                    logits = self.inference(batch.stacked_inputs())
                with self.metrics.stage("encode", len(batch.inputs)):
                    self.postprocess(batch, logits)
                self.metrics.answered(len(batch.inputs))
                if batch.explain:
                    self.explain(batch, logits, context)
                    self.metrics.explained(sum(r.index in batch.explain for r in batch.accepted))
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
            with self.metrics.stage("parse"):
                parsed = parse_request(request, headers, self.limits, context.get_request_id(i))
            error = self.refusal or parsed.error
            if error is None and wants_explanation(headers):  # /explanations, KServe :explain
                try:
                    batch.explain[i] = self.explainer.admit(request, headers, len(parsed.images), len(batch.explain))
                except RequestError as e:
                    error = e
            if error is None:
                images = [self.decode(image) for image in parsed.images]
                error = first_failure(images)
                if error is None:
                    batch.accept(i, parsed, images)
                    self.metrics.refused_images(images)  # those of a multi-image request answered
                elif parsed.several:  # none of its images: its first image's status, every image's reason
                    self.metrics.refused(error.kind)
                    context.set_response_status(error.status, error.message, idx=i)
                    batch.answers[i] = self.encode(images, parsed)
                    continue
            if error is not None:
                self.metrics.refused(error.kind)
                context.set_response_status(error.status, error.message, idx=i)
                batch.answers[i] = json.dumps(error_reply(parsed, error, self.model_info))
        return batch

    def decode(self, image: bytes | RequestError) -> torch.Tensor | RequestError:
        """One image's bytes to its model input, or the error it alone causes."""
        if isinstance(image, RequestError):
            return image
        try:
            with self.metrics.stage("decode"):
                decoded = decode_for_model(image, self.card.preprocessing, self.settings.max_pixels)
            with self.metrics.stage("preprocess"):
                return to_tensor(decoded, self.card.preprocessing)
        except RequestError as e:
            return e

    def inference(self, inputs: torch.Tensor) -> torch.Tensor:
        """The forward pass over every image of the batch (in passes of at most max_images_per_request
        images, which bounds the worker's memory), on whichever runtime the archive names."""
        chunk, threads = self.settings.max_images_per_request, self.threads.count
        if len(inputs) <= chunk:
            return self.model(inputs, threads)
        return torch.cat([self.model(part, threads) for part in inputs.split(chunk)])

    def explain(self, batch: Batch, logits: torch.Tensor, context) -> None:
        """Explanation requests: their answer plus an occlusion map of the image's top (or named) class,
        its masked copies sent through this same `inference`, so it works on every runtime."""
        for request in batch.accepted:
            if request.index not in batch.explain:
                continue
            row = request.rows[0]  # an explanation request has exactly one image (Explainer.admit)
            found = self.explainer.explain(self.inference, request.parsed.images[0], batch.inputs[row], logits[row],
                                           batch.explain[request.index])
            if isinstance(found, RequestError):
                context.set_response_status(found.status, found.message, idx=request.index)
                batch.answers[request.index] = json.dumps(error_reply(request.parsed, found, self.model_info))
            else:
                answer = batch.answers[request.index] or ""
                batch.answers[request.index] = with_explanations(answer, request.parsed.protocol, [found])

    def postprocess(self, batch: Batch, logits: torch.Tensor) -> None:
        """Each image's own top-k; each accepted request's answer as JSON in its own protocol's shape."""
        rows = top_k(logits, batch.row_topk(), self.card.labels)
        for request in batch.accepted:
            results = [rows[row] if isinstance(row, int) else row for row in request.rows]
            batch.answers[request.index] = self.encode(results, request.parsed)

    def encode(self, results: list[ImageAnswer], parsed: ParsedRequest) -> str:
        """Each image's top-k (or its error), in the request's protocol's shape."""
        warning = RANDOM_WEIGHTS_WARNING if self.card.random_weights else None
        return json.dumps(reply(parsed, results, self.model_info, warning), separators=(",", ":"))

    def describe(self) -> dict[str, object]:
        """GET /models/{name}?customized=true: what this worker serves, and whether it does."""
        return {
            "model": self.model_info,
            "serving": self.refusal is None,
            "problem": self.refusal.message if self.refusal else None,
            "classes": len(self.card.labels),
            "labels": self.card.labels,  # the UI's "Is this right?" picker
            "training": self.card.provenance.training,  # fine-tuned models: base weights, data, epochs, accuracy
            "preprocessing": self.card.preprocessing.to_dict(),
            "settings": self.settings.to_dict(),
        }
