"""A parsed request's answer and errors, in the shape its protocol's clients read.

A KServe v1 request is answered in v1 shape ({"predictions": [...]}) and a v2 request in v2 shape
({"model_name", "id", "outputs": [...]}), whatever endpoint it came to: TorchServe's /predictions,
/v1/models/{name}:predict or /v2/models/{name}/infer, or KServe's TorchServe runtime in front of
them. No TorchServe envelope is needed (the stock kserve/kservev2 envelopes answer only the first
request of a batch).

One entry per image, in the request's order:
  plain, one image:      {"predictions": [top-k], "model": ..., "warning"?}
  plain, several images: {"results": [{"predictions": [top-k]} | <image error>, ...], "model": ..., "warning"?}
  v1:                    {"predictions": [[top-k] | <image error>, ...], "model": ..., "warning"?}
  v2:                    outputs "label" (BYTES), "index" (INT64), "probability" (FP32) of shape [n, k];
                         if an image failed, its row is "", -1, 0.0 and an output "error" (BYTES, [n])
                         holds each image's error message ("" for the answered ones).
An image error is {"error": message, "code": status, "type": kind}.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from handler.errors import RequestError, Result
from handler.request import ParsedRequest

Predictions = list[dict[str, object]]
# The v2 outputs (name, datatype) of every answer, each of shape [n, k], and the one of failed images.
V2_OUTPUTS = (("label", "BYTES"), ("index", "INT64"), ("probability", "FP32"))
V2_ERROR_OUTPUT = "error"
# What fills each of the k places of a failed image in the v2 outputs.
V2_EMPTY = {"label": "", "index": -1, "probability": 0.0}


def image_error(error: RequestError) -> dict[str, object]:
    return {"error": error.message, "code": error.status, "type": error.kind}


def _entry(result: Result[Predictions], wrap: bool = False) -> object:
    """One image's entry in a list of answers: its top-k (under "predictions" if `wrap`), or its error."""
    if result.error is not None:
        return image_error(result.error)
    return {"predictions": result.value} if wrap else result.value


def reply(parsed: ParsedRequest, results: Sequence[Result], model: dict, warning: str | None = None) -> dict:
    """The answer to a request whose images were classified: each image's top-k, or the error it alone
    caused (`results` of a request none of whose images could be read hold errors only)."""
    if parsed.protocol == "v2":
        return _v2_reply(parsed, results, model, warning)
    if parsed.protocol == "v1":
        answer: dict[str, object] = {"predictions": [_entry(r) for r in results]}
    elif parsed.several:
        answer = {"results": [_entry(r, wrap=True) for r in results]}
    else:
        answer = {"predictions": results[0].value}
    answer["model"] = model
    if warning:
        answer["warning"] = warning
    return answer


def _v2_reply(parsed: ParsedRequest, results: Sequence[Result], model: dict, warning: str | None) -> dict:
    k = max((len(r.value) for r in results if r.value is not None), default=0)
    rows = [r.value if r.value is not None else [V2_EMPTY] * k for r in results]
    shape = [len(rows), k]
    outputs = [
        {"name": name, "datatype": datatype, "shape": shape, "data": [p[name] for row in rows for p in row]}
        for name, datatype in V2_OUTPUTS
    ]
    if not all(r.ok for r in results):
        errors = [r.error.message if r.error is not None else "" for r in results]
        outputs.append({"name": V2_ERROR_OUTPUT, "datatype": "BYTES", "shape": [len(rows)], "data": errors})
    response = {**_v2_head(parsed, model), "outputs": outputs}
    facts = ("weights", "runtime", "precision")
    parameters = {k: model.get(k) for k in facts if model.get(k)}
    if warning:
        parameters["warning"] = warning
    if parameters:
        response["parameters"] = parameters
    return response


def _v2_head(parsed: ParsedRequest, model: dict) -> dict[str, object]:
    return {
        "model_name": model.get("name"),
        "model_version": model.get("version"),
        "id": parsed.request_id or str(uuid.uuid4()),
    }


def error_reply(parsed: ParsedRequest, error: RequestError, model: dict) -> dict:
    """A refused request's JSON; KServe v1/v2 clients read the reason from "error". A v2 refusal is also
    a whole v2 answer with the reason as its "error" output: TorchServe's OIP gRPC service reads id,
    model_name, model_version and outputs from every answer (and fails the call without them)."""
    body = error.to_json()
    if parsed.protocol == "plain":
        return body
    if parsed.protocol == "v2":
        output = {"name": V2_ERROR_OUTPUT, "datatype": "BYTES", "shape": [1], "data": [error.message]}
        return {"error": error.message, **body, **_v2_head(parsed, model), "outputs": [output]}
    return {"error": error.message, **body}


def first_failure(results: Sequence[Result]) -> RequestError | None:
    """A request none of whose images could be answered fails as a whole, with its first image's
    status (its body says what went wrong with each: `reply`)."""
    if results and not any(r.ok for r in results):
        return results[0].error
    return None


def compact(answer: dict) -> str:
    """A classified request's answer as sent: JSON without spaces."""
    return json.dumps(answer, separators=(",", ":"))
