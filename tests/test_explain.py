"""Explanations without a server: the occlusion map on a model whose right answer is known, the class
named by the request, the per-worker bound, and the handler's glue driven with TorchServe's own Context."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from handler.errors import RequestError
from handler.explain import (
    Explainer,
    ExplanationBudget,
    chunk_size,
    crop_region,
    occlusion_passes,
    occlusion_saliency,
    target_index,
    wants_explanation,
)
from handler.model_card import Preprocessing
from handler.preprocess import to_tensor
from handler.request import Limits, parse_request, requested_target
from handler.settings import DEFAULTS, HandlerSettings
from service.photos import grace_hopper
from tests import known_answer_model as known
from tests.test_handler import load_handler, run_batch


@pytest.fixture(scope="module")
def known_model() -> torch.jit.ScriptModule:
    return known.train()


def saliency_of(model, picture: Image.Image, label: str) -> np.ndarray:
    tensor = to_tensor(picture, known.SPEC)
    return occlusion_saliency(model, tensor, known.LABELS.index(label), DEFAULTS.explain_grid,
                              DEFAULTS.explain_batch).grid


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("label", ["cat", "coffee"])
def test_explanation_sits_on_the_subject(known_model, side, label):
    """A photo's subject pasted into one half of a plain canvas: the model names it, and the
    explanation's mass for that class lies mostly in that half."""
    picture = known.subject_on_one_side(side, label=label)
    with torch.inference_mode():
        probabilities = torch.softmax(known_model(to_tensor(picture, known.SPEC)[None]), dim=1)[0]
    assert known.LABELS[int(probabilities.argmax())] == label
    grid = saliency_of(known_model, picture, label)
    assert grid.shape == (DEFAULTS.explain_grid, DEFAULTS.explain_grid)
    assert grid.min() >= 0 and grid.max() == pytest.approx(1.0)
    left, right = known.half_masses(grid)
    assert (left if side == "left" else right) > 0.8, (left, right)


def test_explanation_follows_exif_orientation(known_model, tmp_path):
    """The stored pixels are rotated and EXIF says how to turn them upright: the grid and the overlay
    are in the upright picture's orientation, as a person sees the photo."""
    upright = known.subject_on_one_side("left")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    settings = HandlerSettings()
    explainer = Explainer(settings, known.LABELS, known.SPEC)
    tensor = to_tensor(upright, known.SPEC)
    with torch.inference_mode():
        logits = known_model(tensor[None])[0]
    result = explainer.explain(known_model, buffer.getvalue(), tensor, logits, None)
    assert result.ok, result.error
    found = result.value
    assert found["target"]["label"] == "cat"
    left, _ = known.half_masses(found["grid"])
    assert left > 0.8
    overlay = Image.open(io.BytesIO(base64.b64decode(found["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == upright.size  # upright and not enlarged past 448


def test_masks_go_through_the_forward_callable_in_equal_batches():
    """Model-agnostic: nothing but forward(batch) -> logits; every masked batch has the same size (the
    last one padded), so a compiled model never meets a new shape."""
    shapes = []
    weights = torch.randn(3 * 32 * 32, 5)

    def forward(x: torch.Tensor) -> torch.Tensor:
        shapes.append(len(x))
        return x.flatten(1) @ weights

    saliency = occlusion_saliency(forward, torch.randn(3, 32, 32), 2, grid=8, batch=16)
    passes = occlusion_passes(8, 32, 32)
    size = chunk_size(passes, 16)
    assert passes == 50 and size == 13 and saliency.forward_passes == passes
    assert shapes[0] == 1 and set(shapes[1:]) == {size} and len(shapes) == 1 + 4


def test_crop_region_is_the_part_the_model_sees():
    spec = Preprocessing()  # resize 256, crop 224
    left, top, width, height = crop_region(600, 400, spec)  # resized to 384x256, crop 224 in the middle
    assert (round(left * 384), round(top * 256), round(width * 384), round(height * 256)) == (80, 16, 224, 224)
    assert crop_region(256, 256, spec) == pytest.approx((16 / 256, 16 / 256, 224 / 256, 224 / 256))


def test_class_named_by_label_or_index_and_unknown_names_say_how():
    labels = ["tabby", "tiger cat", "Persian cat"]
    assert target_index("Tiger Cat", labels) == 1 and target_index("2", labels) == 2
    for bad in ("tabby cat", "3", "-1", "../../etc/passwd", "x" * 500):
        with pytest.raises(RequestError) as caught:
            target_index(bad, labels)
        error = caught.value
        assert error.status == 400 and error.kind == "UnknownClass"
        assert "label" in error.message and "index from 0 to 2" in error.message
        assert len(error.message) < 400
    with pytest.raises(RequestError, match="Did you mean 'tabby'"):
        target_index("tabbby", labels)


def test_target_read_from_form_json_v2_parameters_and_header():
    assert requested_target({"target": b"tabby"}, None, {}) == "tabby"
    assert requested_target({}, {"data": "...", "target": "tabby"}, {}) == "tabby"
    assert requested_target({}, {"inputs": [], "parameters": {"target": "tabby"}}, {}) == "tabby"
    assert requested_target({"body": b"x"}, None, {"X-Explain-Target": "tabby"}) == "tabby"
    assert requested_target({"body": b"x"}, None, {}) is None
    # read with the rest of the request, once (handler/request.py): the parsed request carries it
    limits = Limits(topk=3, num_classes=1000)
    assert parse_request({"body": b"x", "target": b" tabby "}, {}, limits).target == "tabby"
    assert parse_request({"body": b"x"}, {"X-Explain-Target": "7"}, limits).target == "7"
    assert parse_request({"body": b"x"}, {}, limits).target is None
    assert wants_explanation({"explain": "True"}) and not wants_explanation({"explain": "False"})
    # /predictions: the frontend's own explain: False after a client's "Explain: True" keeps it a prediction
    assert not wants_explanation({"Explain": "True", "explain": "False"}) and not wants_explanation({})


def test_budget_bounds_explanations_per_batch_and_share_of_time():
    budget = ExplanationBudget(share=0.5, per_batch=1, burst_s=1.0)
    assert budget.admit(0) is None
    refused = budget.admit(1)
    assert refused is not None and refused.status == 503 and refused.kind == "ExplanationBusy"
    budget.spend(3.0)  # explanations took 3 s: the balance is 1 - 3 = -2 s, earned back at 0.5 s/s
    refused = budget.admit(0)
    assert refused is not None and refused.status == 503 and "50%" in refused.message
    budget.last -= 4.1  # 4.1 s later
    assert budget.admit(0) is None


@pytest.mark.parametrize("bad", [{"explain_grid": 1}, {"explain_grid": 33}, {"explain_share": 0},
                                 {"explain_share": 1.5}, {"explain_batch": 0}, {"explain_per_batch": "many"}])
def test_wrong_explanation_settings_refused_at_start(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        HandlerSettings(**bad)


@pytest.fixture(scope="module")
def handler_and_context(model_store, tmp_path_factory):
    return load_handler(model_store, tmp_path_factory.mktemp("model_dir"))


def test_handler_explains_an_explanation_request_and_predicts_the_others(handler_and_context):
    """One batch: a prediction, an explanation, a second explanation (over the per-batch bound: 503), an
    explanation of an unknown class (400). The prediction is the same as the explanation's top-k."""
    photo = grace_hopper().read_bytes()
    explain = {"explain": "True"}
    answers = run_batch(
        handler_and_context,
        [{"body": photo}, {"body": photo}, {"body": photo}, {"body": photo, "target": b"no such class"}],
        [{"explain": "False"}, explain, explain, explain],
    )
    (s0, prediction), (s1, explained), (s2, busy), (s3, unknown) = answers
    assert (s0, s1, s2, s3) == (200, 200, 503, 400)
    assert "explanations" not in prediction
    assert explained["predictions"] == prediction["predictions"]
    [found] = explained["explanations"]
    assert found["target"]["index"] == prediction["predictions"][0]["index"]
    assert found["rows"] == found["cols"] == DEFAULTS.explain_grid
    assert found["forward_passes"] == (DEFAULTS.explain_grid - 1) ** 2 + 1
    assert all(0 <= v <= 1 for row in found["grid"] for v in row)
    assert Image.open(io.BytesIO(base64.b64decode(found["overlay_png"]))).format == "PNG"
    assert busy["type"] == "ExplanationBusy" and unknown["type"] == "UnknownClass"


def test_handler_explains_a_named_class_in_v1_and_v2_shapes(handler_and_context):
    photo = base64.b64encode(grace_hopper().read_bytes()).decode()
    handler_and_context[0].explainer.budget.balance_s = 2.0  # earlier tests spent this worker's budget
    [(status, v1)] = run_batch(handler_and_context, [{"body": json.dumps({"instances": [{"data": photo}],
                                                                          "target": "7"}).encode()}],
                               [{"explain": "True"}])
    assert status == 200 and len(v1["predictions"]) == 1 and v1["explanations"][0]["target"]["index"] == 7
    handler_and_context[0].explainer.budget.balance_s = 2.0
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [photo]}],
            "parameters": {"target": "3"}}
    [(status, v2)] = run_batch(handler_and_context, [{"body": json.dumps(body).encode()}], [{"explain": "True"}])
    assert status == 200
    output = next(o for o in v2["outputs"] if o["name"] == "explanation")
    assert output["datatype"] == "BYTES" and json.loads(output["data"][0])["target"]["index"] == 3


def test_a_broken_image_does_not_take_the_batch_explanation_slot(handler_and_context):
    """An explanation takes the batch's one explanation slot only once its image decodes: a first
    explanation request whose image is broken gets its own 415, and the next one is explained, not a 503."""
    handler_and_context[0].explainer.budget.balance_s = 2.0  # earlier tests spent this worker's budget
    photo = grace_hopper().read_bytes()
    explain = {"explain": "True"}
    (s0, broken), (s1, explained) = run_batch(
        handler_and_context, [{"body": b"not an image"}, {"body": photo}], [explain, explain]
    )
    assert s0 == 415 and broken["type"] == "UnsupportedImage"
    assert s1 == 200, explained
    [found] = explained["explanations"]
    assert found["target"]["index"] == explained["predictions"][0]["index"]


def test_an_explanation_request_body_is_read_once(handler_and_context, monkeypatch):
    """The class to explain is parsed with the rest of the request (handler/request.py): a JSON body
    (up to max_image_bytes of base64) is parsed once, not again to find its "target"."""
    handler_and_context[0].explainer.budget.balance_s = 2.0
    photo = base64.b64encode(grace_hopper().read_bytes()).decode()
    body = json.dumps({"instances": [{"data": photo}], "target": "5"}).encode()
    parses = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda text, **kw: (parses.append(text is body), loads(text, **kw))[1])
    [(status, answer)] = run_batch(handler_and_context, [{"body": body}], [{"explain": "True"}])
    monkeypatch.undo()
    assert status == 200 and answer["explanations"][0]["target"]["index"] == 5
    assert sum(parses) == 1
