"""The archive behind KServe: deploy/kserve/config.properties on a real local TorchServe,
called the way KServe's TorchServe runtime calls it (v1 and Open Inference Protocol v2 JSON
with base64 images, no token), including concurrent requests that share a batch."""

from __future__ import annotations

import base64
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from service.local.torchserve import TorchServe, free_port
from service.properties import read_properties

ROOT = Path(__file__).resolve().parent.parent
KSERVE_CONFIG = ROOT / "deploy" / "kserve" / "config.properties"
MODEL = "resnet18"

pytestmark = pytest.mark.server


def jpeg(color: tuple[int, int, int], size=(320, 240)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], color[1] // 2, 255 - color[2]), (40, 40, 200, 160))
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def v2_body(image: bytes, request_id: str | None = None, **extra) -> dict:
    data = [base64.b64encode(image).decode()]
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": data}]}
    if request_id:
        body["id"] = request_id
    return {**body, **extra}


@pytest.fixture(scope="module")
def kserve_server(model_store, tmp_path_factory):
    """TorchServe started with KServe's config, ports moved to free ones (inference and
    management share one port, as in the pod), with the env var KServe's runtime sets."""
    port = free_port()
    server = TorchServe(
        tmp_path_factory.mktemp("kserve-run"),
        model_store,
        config=KSERVE_CONFIG,
        overrides={
            "inference_address": f"http://127.0.0.1:{port}",
            "management_address": f"http://127.0.0.1:{port}",
            "metrics_address": f"http://127.0.0.1:{free_port()}",
            "grpc_inference_port": str(free_port()),
            "grpc_management_port": str(free_port()),
            "initial_worker_port": str(20000 + port % 20000),
            "allowed_urls": "file://.*\\\\.mar",
        },
    )
    previous = os.environ.get("TS_SERVICE_ENVELOPE")
    os.environ["TS_SERVICE_ENVELOPE"] = "kservev2"  # what the runtime sets for protocolVersion v2
    try:
        server.start()
    finally:
        if previous is None:
            os.environ.pop("TS_SERVICE_ENVELOPE")
        else:
            os.environ["TS_SERVICE_ENVELOPE"] = previous
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def base_url(kserve_server) -> str:
    return kserve_server.endpoints.inference


def post_json(url: str, body: dict, content_type: str = "application/json") -> requests.Response:
    return requests.post(url, data=json.dumps(body), headers={"Content-Type": content_type}, timeout=60)


def test_config_is_the_kserve_layout():
    props = read_properties(KSERVE_CONFIG)
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["inference_address"].endswith(":8085")  # 8080 belongs to KServe's model server
    snapshot = json.loads(props["model_snapshot"])
    assert snapshot["models"][MODEL]["1.0"]["marName"] == f"{MODEL}.mar"
    assert props["enable_envvars_config"] == "false"  # keeps TS_SERVICE_ENVELOPE out


def test_v2_infer(base_url):
    response = post_json(f"{base_url}/v2/models/{MODEL}/infer", v2_body(jpeg((200, 30, 30)), "abc-1"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == MODEL and answer["id"] == "abc-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert set(outputs) == {"label", "index", "probability"}
    for output in outputs.values():
        assert output["shape"] == [1, 3]  # default top-k from model-config.yaml
        assert len(output["data"]) == 3
    assert outputs["label"]["datatype"] == "BYTES" and all(isinstance(x, str) for x in outputs["label"]["data"])
    assert outputs["probability"]["data"] == sorted(outputs["probability"]["data"], reverse=True)
    assert "random weights" in answer["parameters"]["warning"]


def test_v2_answer_matches_plain_predictions(base_url):
    image = jpeg((20, 160, 90))
    plain = requests.post(f"{base_url}/predictions/{MODEL}", data=image, timeout=60).json()["predictions"]
    v2 = post_json(f"{base_url}/v2/models/{MODEL}/infer", v2_body(image, parameters={"topk": 3})).json()
    outputs = {o["name"]: o["data"] for o in v2["outputs"]}
    assert outputs["label"] == [p["label"] for p in plain]
    assert outputs["index"] == [p["index"] for p in plain]
    assert outputs["probability"] == [p["probability"] for p in plain]
    assert v2["id"]  # TorchServe's request id when the request has none


def test_v2_topk_parameter_and_charset_content_type(base_url):
    body = v2_body(jpeg((90, 90, 200)), "k5", parameters={"topk": 5})
    response = post_json(f"{base_url}/v2/models/{MODEL}/infer", body, "application/json; charset=UTF-8")
    assert response.status_code == 200, response.text
    assert all(o["shape"] == [1, 5] for o in response.json()["outputs"])


def test_v1_predict(base_url):
    image = base64.b64encode(jpeg((250, 250, 10))).decode()
    response = post_json(f"{base_url}/v1/models/{MODEL}:predict", {"instances": [{"data": image}]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 1 and len(predictions[0]) == 3
    assert {"label", "index", "probability"} <= set(predictions[0][0])


def test_concurrent_v2_requests_each_get_their_own_answer(base_url):
    """The stock kservev2 envelope answers only a batch's first request; here each request in
    a shared batch (batchSize 4, maxBatchDelay 150 ms in the test archive) gets its own."""
    colors = [(i * 30 % 256, 255 - i * 20, (i * 70) % 256) for i in range(8)]
    expected = {}
    for i, color in enumerate(colors):
        answer = post_json(f"{base_url}/v2/models/{MODEL}/infer", v2_body(jpeg(color), f"solo-{i}")).json()
        expected[i] = answer["outputs"]

    def call(i: int) -> tuple[int, requests.Response]:
        return i, post_json(f"{base_url}/v2/models/{MODEL}/infer", v2_body(jpeg(colors[i]), f"req-{i}"))

    with ThreadPoolExecutor(len(colors)) as pool:
        results = list(pool.map(call, range(len(colors))))
    for i, response in results:
        assert response.status_code == 200, response.text
        assert response.json()["id"] == f"req-{i}"
        assert response.json()["outputs"] == expected[i]


def test_bad_v2_request_is_refused_alone(base_url):
    image = base64.b64encode(jpeg((1, 2, 3))).decode()
    one = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}
    two_inputs = {"inputs": [one, one]}  # several images go as elements of one input, not as inputs
    response = post_json(f"{base_url}/v2/models/{MODEL}/infer", two_inputs)
    assert response.status_code == 400
    assert "exactly one input" in response.json()["error"]
    two_images = {"inputs": [{**one, "shape": [2], "data": [image, image]}]}
    response = post_json(f"{base_url}/v2/models/{MODEL}/infer", two_images)
    assert response.status_code == 200 and response.json()["outputs"][0]["shape"][0] == 2
    assert post_json(f"{base_url}/v2/models/{MODEL}/infer", v2_body(jpeg((1, 2, 3)))).status_code == 200


def test_what_the_kserve_wrapper_calls_needs_no_token(kserve_server):
    """The wrapper's readiness check (management API, READY workers) and /ping, tokenless."""
    endpoints = kserve_server.endpoints
    assert not kserve_server.key_file.exists()
    assert requests.get(f"{endpoints.inference}/ping", timeout=10).status_code == 200
    described = requests.get(f"{endpoints.management}/models/{MODEL}?customized=false", timeout=10).json()
    assert any(w["status"] == "READY" for w in described[0]["workers"])
