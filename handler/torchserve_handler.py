"""TorchServe entry point: thin glue from TorchServe's batch to the plain functions.

One straight path per batch, in TorchServe's own words: preprocess (each request parsed once,
admitted, then its images decoded to input tensors), inference (one forward pass over the
accepted ones; explanation requests add their masked passes), postprocess (top-k, and each
answer encoded once as JSON). A request refused at any step is answered by `refuse` alone, in
its protocol's shape; each image's outcome, from its bytes to its top-k, is one `Result`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from handler.answer import compact, error_reply, first_failure, reply
from handler.batch import Batch
from handler.cores import ThreadPolicy, available_cores, configured_workers
from handler.errors import RequestError, Result
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
        """Settings, threads, model card and model, once per worker; an archive that cannot be served
        still loads, so every request gets the reason (`describe`, `refusal`)."""
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
        self.model_info = self.served_model(context.manifest.get("model", {}))
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

    def served_model(self, manifest: dict) -> dict[str, object]:
        """What every answer says about the model that gave it (the runtime's precision once loaded)."""
        return {
            "name": manifest.get("modelName"),
            "version": manifest.get("modelVersion"),
            "arch": self.card.provenance.arch,
            "weights": self.card.provenance.weights,
            "random_weights": self.card.random_weights,
            "runtime": self.card.provenance.served_runtime,
            "precision": self.card.provenance.served_precision,
        }

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
                threads = self.threads.grow()  # the forward pass takes the cores no other worker holds
                with self.metrics.forward(len(batch.inputs), threads):
                    logits = self.inference(batch.stacked_inputs())
                explanations = self.explain(batch, logits)
                with self.metrics.stage("encode", len(batch.inputs)):
                    self.postprocess(batch, logits, explanations, context)
                self.metrics.answered(len(batch.inputs))
                if batch.explain:
                    self.metrics.explained(len(batch.explain))
        log.info(
            "batch of %d: %d answered, %d refused in %.1f ms",
            len(data),
            len(batch.accepted),
            batch.refused,
            (time.perf_counter() - started) * 1000,
        )
        return batch.replies()

    def preprocess(self, data: list[dict], context) -> Batch:
        """parse -> admit -> decode, request by request. A request refused at any step is answered at
        once (`refuse`), alone, in its own protocol's shape; the others wait for the forward pass."""
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
            explain = wants_explanation(headers)  # /explanations, KServe :explain
            target = self.admit(parsed, explain)
            images = [image.then(self.decode) for image in parsed.sent] if target.ok else []
            error = target.error or first_failure(images)
            if error is None and explain:  # a batch's explanation slot goes only to an image that decoded
                error = self.explainer.reserve(len(batch.explain))
            if error is not None:
                self.refuse(context, batch, i, parsed, error, images)
                continue
            batch.accept(i, parsed, images)
            if explain:
                batch.explain[i] = target.value
            self.metrics.refused_images(images)  # those of a multi-image request answered
        return batch

    def admit(self, parsed: ParsedRequest, explain: bool) -> Result[int | None]:
        """Whether a parsed request goes on to decoding: the worker serves, the request parsed, and an
        explanation request names a known class and one image. Its value: the class to explain
        (None: the image's top class)."""
        error = self.refusal or parsed.error
        if error is not None:
            return Result(error=error)
        if not explain:
            return Result(None)
        return Result.of(self.explainer.target, parsed.target, len(parsed.sent))

    def decode(self, data: bytes) -> torch.Tensor:
        """One image's bytes to its model input; RequestError if they are not a usable image."""
        with self.metrics.stage("decode"):
            decoded = decode_for_model(data, self.card.preprocessing, self.settings.max_pixels)
        with self.metrics.stage("preprocess"):
            return to_tensor(decoded, self.card.preprocessing)

    def refuse(
        self, context, batch: Batch, i: int, parsed: ParsedRequest, error: RequestError, images: Sequence[Result] = ()
    ) -> None:
        """The one place a request is refused: its status, the refusal count, its answer. A request of
        several images none of which could be read says what went wrong with each (`images`)."""
        self.metrics.refused(error.kind)
        context.set_response_status(error.status, error.message, idx=i)
        if parsed.several and first_failure(images) is not None:
            batch.answers[i] = compact(self.answer(images, parsed))
        else:
            batch.answers[i] = json.dumps(error_reply(parsed, error, self.model_info))

    def inference(self, inputs: torch.Tensor) -> torch.Tensor:
        """The forward pass over every image of the batch (in passes of at most max_images_per_request
        images, which bounds the worker's memory), on whichever runtime the archive names."""
        chunk, threads = self.settings.max_images_per_request, self.threads.count
        if len(inputs) <= chunk:
            return self.model(inputs, threads)
        return torch.cat([self.model(part, threads) for part in inputs.split(chunk)])

    def explain(self, batch: Batch, logits: torch.Tensor) -> dict[int, Result[dict]]:
        """Each explanation request's occlusion map of its image's top (or named) class, or why it failed;
        the masked copies go through this same `inference`, so it works on every runtime."""
        found: dict[int, Result[dict]] = {}
        for request in batch.accepted:
            if request.index in batch.explain:
                row = request.rows[0].value  # an explanation request has one image, decoded (preprocess)
                found[request.index] = self.explainer.explain(
                    self.inference, request.parsed.images[0], batch.inputs[row], logits[row],
                    batch.explain[request.index],
                )
        return found

    def postprocess(self, batch: Batch, logits: torch.Tensor, explanations: dict[int, Result[dict]], context) -> None:
        """Each image's own top-k; each accepted request's answer, with its explanation if it asked for
        one, encoded once as JSON in its own protocol's shape (a failed explanation: its 500)."""
        rows = top_k(logits, batch.topk, self.card.labels)
        for request in batch.accepted:
            explanation = explanations.get(request.index)
            if explanation is not None and explanation.error is not None:
                self.refuse(context, batch, request.index, request.parsed, explanation.error)
                continue
            answer = self.answer([row.then(rows.__getitem__) for row in request.rows], request.parsed)
            if explanation is not None:
                answer = with_explanations(answer, request.parsed.protocol, [explanation.value])
            batch.answers[request.index] = compact(answer)

    def answer(self, results: Sequence[Result], parsed: ParsedRequest) -> dict:
        """Each image's top-k (or its error), in the request's protocol's shape."""
        warning = RANDOM_WEIGHTS_WARNING if self.card.random_weights else None
        return reply(parsed, results, self.model_info, warning)

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
