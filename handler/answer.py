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

import uuid

from handler.errors import RequestError
from handler.request import ParsedRequest

Predictions = list[dict[str, object]]
# The v2 outputs (name, datatype) of every answer, each of shape [n, k], and the one of failed images.
V2_OUTPUTS = (("label", "BYTES"), ("index", "INT64"), ("probability", "FP32"))
V2_ERROR_OUTPUT = "error"
# One image's answer: its top-k, or why it has none.
ImageAnswer = Predictions | RequestError


def image_error(error: RequestError) -> dict[str, object]:
    return {"error": error.message, "code": error.status, "type": error.kind}


def _entry(result: ImageAnswer) -> object:
    return image_error(result) if isinstance(result, RequestError) else result


def reply(parsed: ParsedRequest, results: list[ImageAnswer], model: dict, warning: str | None = None) -> dict:
    """The answer to a request whose images were classified (some of them may have failed)."""
    if parsed.protocol == "v2":
        return _v2_reply(parsed, results, model, warning)
    if parsed.protocol == "v1":
        answer: dict[str, object] = {"predictions": [_entry(r) for r in results]}
    elif parsed.several:
        answer = {"results": [image_error(r) if isinstance(r, RequestError) else {"predictions": r} for r in results]}
    else:
        answer = {"predictions": results[0]}
    answer["model"] = model
    if warning:
        answer["warning"] = warning
    return answer


def _v2_reply(parsed: ParsedRequest, results: list[ImageAnswer], model: dict, warning: str | None) -> dict:
    k = max((len(r) for r in results if not isinstance(r, RequestError)), default=0)
    rows = [[{"label": "", "index": -1, "probability": 0.0}] * k if isinstance(r, RequestError) else r for r in results]
    shape = [len(rows), k]
    outputs = [
        {"name": name, "datatype": datatype, "shape": shape, "data": [p[name] for row in rows for p in row]}
        for name, datatype in V2_OUTPUTS
    ]
    if any(isinstance(r, RequestError) for r in results):
        errors = [r.message if isinstance(r, RequestError) else "" for r in results]
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


def first_failure(results: list[ImageAnswer]) -> RequestError | None:
    """A request none of whose images could be answered fails as a whole, with its first image's
    status (its body still says what went wrong with each)."""
    if results and all(isinstance(r, RequestError) for r in results):
        return results[0]  # type: ignore[return-value]
    return None
