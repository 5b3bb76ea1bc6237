"""Security defaults: tokens, loopback binding, model API off, local archives only, archive
integrity at load, and a server that never runs what a request carries."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import pickle
import re
import shutil
import threading
import time
import zipfile

import numpy as np
import psutil
import pytest
import requests
import torch

from handler.model_card import MODEL_FILE
from service.local.torchserve import TorchServe, store_only_urls
from service.names import CONFIG, ROOT
from service.photos import grace_hopper
from service.properties import read_properties
from tests.conftest import MODEL

DEPLOY_CONFIGS = {
    "default": CONFIG,
    **{name: ROOT / "deploy" / name / "config.properties" for name in ("docker", "k8s", "kserve")},
}
ADDRESS_KEYS = ("inference_address", "management_address", "metrics_address", "grpc_inference_address",
                "grpc_management_address")


def test_config_binds_loopback_and_keeps_protections_on():
    props = read_properties(CONFIG)
    for key in ADDRESS_KEYS:
        assert re.fullmatch(r"(https?://)?127\.0\.0\.1(:\d+)?", props[key]), (key, props[key])
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "true"  # for versions: behind the management key and the front's check
    assert props["max_request_size"].isdigit()


@pytest.mark.parametrize("config", sorted(DEPLOY_CONFIGS), ids=str)
def test_model_api_is_on_only_where_tokens_guard_it(config):
    """k8s and KServe run without tokens behind cluster-internal access: registering stays off there."""
    props = read_properties(DEPLOY_CONFIGS[config])
    if props["disable_token_authorization"] == "true":
        assert props["enable_model_api"] == "false", config


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("file:///srv/app/model_store/resnet18.mar", True),
        ("https://example.com/resnet18.mar", False),
        ("http://127.0.0.1/model_store/resnet18.mar", False),
        ("file:///etc/passwd", False),
        ("file:///srv/app/model_store/sub/evil.mar", False),
        ("file:///srv/app/model_store/resnet18.mar.py", False),
    ],
)
def test_allowed_urls_is_the_local_model_store(url, allowed):
    pattern = read_properties(CONFIG)["allowed_urls"].replace("\\\\", "\\")
    assert any(re.fullmatch(p, url) for p in pattern.split(",")) is allowed


@pytest.mark.server
def test_server_listens_on_loopback_only(torchserve):
    launcher = psutil.Process(torchserve.process.pid)
    listening = [c.laddr for p in [launcher, *launcher.children(recursive=True)]
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    loopback = ("127.0.0.1", "::ffff:127.0.0.1")  # Java reports IPv4 loopback in its IPv6-mapped form
    assert len(listening) >= 3 and all(a.ip in loopback for a in listening), listening


@pytest.mark.server
def test_requests_without_a_valid_token_are_refused(torchserve, client):
    inference, management = torchserve.endpoints.inference, torchserve.endpoints.management
    image = grace_hopper().read_bytes()
    calls = [
        ("POST", f"{inference}/predictions/{MODEL}", image),
        ("POST", f"{inference}/invocations?model_name={MODEL}", image),
        ("GET", f"{inference}/ping", None),
        ("GET", f"{management}/models", None),
        ("GET", f"{management}/models/{MODEL}", None),
        ("PUT", f"{management}/models/{MODEL}?min_worker=3&synchronous=true", None),
        ("GET", f"{management}/token?type=inference", None),
    ]
    for method, url, data in calls:
        for headers in ({}, {"Authorization": "Bearer not-the-key"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
            response = requests.request(method, url, data=data, timeout=30,
                                        headers={**headers, "Content-Type": "image/jpeg"})
            assert response.status_code == 400 and "InvalidKeyException" in response.text, (method, url, headers)
    # Each key opens only its own API.
    keys = client.keys
    for url in (f"{management}/models",):
        response = requests.get(url, headers={"Authorization": f"Bearer {keys['inference']}"}, timeout=30)
        assert response.status_code == 400
    response = requests.post(f"{inference}/predictions/{MODEL}", data=image, timeout=30,
                             headers={"Authorization": f"Bearer {keys['management']}", "Content-Type": "image/jpeg"})
    assert response.status_code == 400
    assert len(client.describe_model(MODEL).json()[0]["workers"]) < 3  # the refused scale did nothing


def test_a_server_allows_urls_of_its_own_model_store_only(tmp_path):
    """The rendered allowed_urls (service/local/torchserve.py) names this store, not any `model_store` folder."""
    store = tmp_path / "model-store.v1"
    pattern = read_properties_text(store_only_urls(store))
    assert re.fullmatch(pattern, f"file://{store}/resnet18-v2.mar")
    for url in (f"file://{tmp_path}/other/model_store/evil.mar", f"file://{store}/sub/evil.mar",
                f"file://{tmp_path}/model-storeXv1/evil.mar", "https://example.com/model_store/evil.mar"):
        assert not re.fullmatch(pattern, url), url


def read_properties_text(value: str) -> str:
    """A config.properties value as Java's Properties reads it (backslash escapes undone)."""
    return value.replace("\\\\", "\\")


class Recording(http.server.BaseHTTPRequestHandler):
    """An HTTP server that would hand out an archive: it records every request it gets."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Recording.requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"PK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.server
def test_model_api_registers_nothing_from_outside_the_store_or_without_the_key(torchserve, client, model_store,
                                                                               tmp_path):
    """On TorchServe itself (no front): a URL, a file URL or a path outside the model store and a call
    without the management key are refused; nothing is fetched or copied into the store; still serving."""
    management = torchserve.endpoints.management
    outside = tmp_path / "elsewhere" / "model_store"
    outside.mkdir(parents=True)
    shutil.copy(model_store / f"{MODEL}.mar", outside / "evil.mar")
    before = sorted(p.name for p in model_store.iterdir())
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        for url in (f"http://127.0.0.1:{web.server_port}/evil.mar", "https://example.com/evil.mar",
                    f"file://{outside}/evil.mar", str(outside / "evil.mar"), "../elsewhere/model_store/evil.mar"):
            response = client._call("management", "POST", f"{management}/models",
                                    params={"url": url, "initial_workers": 1, "synchronous": "true"})
            assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    finally:
        web.shutdown()
    assert Recording.requests == []  # nothing fetched
    assert sorted(p.name for p in model_store.iterdir()) == before  # nothing copied in
    for method, params in (("POST", {"url": f"{MODEL}.mar"}), ("DELETE", None), ("PUT", None)):
        path = f"{management}/models" if method == "POST" else f"{management}/models/{MODEL}/1.0"
        path += "/set-default" if method == "PUT" else ""
        response = requests.request(method, path, params=params, timeout=30)
        assert response.status_code == 400 and "InvalidKeyException" in response.text, (method, response.text)
    assert [m["modelName"] for m in client.list_models().json()["models"]] == [MODEL]
    assert len(client.describe_versions(MODEL).json()) == 1
    assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200


class MakesMarker:
    """Unpickling this calls os.mkdir(path): the marker directory exists only if someone unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def hostile_payloads(marker: str) -> dict[str, tuple[bytes, str, dict[str, str]]]:
    """name -> (body, content type, extra headers): data that runs code if evaluated or deserialized."""
    pickled = pickle.dumps(MakesMarker(marker))
    torch_file, numpy_file = io.BytesIO(), io.BytesIO()
    torch.save(MakesMarker(marker), torch_file)
    np.save(numpy_file, np.array([MakesMarker(marker)], dtype=object), allow_pickle=True)
    expression = f"__import__('os').mkdir({marker!r})"
    as_json = {"data": expression}
    return {
        "pickle, raw": (pickled, "application/octet-stream", {}),
        "pickle, as a JPEG": (pickled, "image/jpeg", {}),
        "pickle, base64 in JSON": (json.dumps({"data": base64.b64encode(pickled).decode()}).encode(),
                                   "application/json", {}),
        "pickle, KServe v1 instance": (json.dumps({"instances": [{"b64": base64.b64encode(pickled).decode()}]})
                                       .encode(), "application/json", {}),
        "torch.save file": (torch_file.getvalue(), "application/octet-stream", {}),
        "numpy .npy with objects": (numpy_file.getvalue(), "application/octet-stream", {}),
        "YAML python tag": (f"!!python/object/apply:os.mkdir [{marker!r}]\n".encode(), "application/x-yaml", {}),
        "Python expression as data": (json.dumps(as_json).encode(), "application/json", {}),
        "Python expression as top-k": (grace_hopper().read_bytes(), "image/jpeg", {"X-TopK": expression}),
    }


@pytest.mark.server
def test_hostile_payloads_are_refused_and_never_run(torchserve, client, tmp_path):
    """Pickles (raw, base64, in torch.save and numpy files), a YAML tag and Python expressions that
    would create a directory if the server deserialized or evaluated them: each gets its own 4xx JSON
    answer, nothing runs, no worker dies, and a photo is still classified afterwards."""
    marker = tmp_path / "hostile-payload-ran"
    url = f"{torchserve.endpoints.inference}/predictions/{MODEL}"
    workers = {w["pid"] for w in client.describe_model(MODEL).json()[0]["workers"]}
    for name, (body, content_type, headers) in hostile_payloads(str(marker)).items():
        response = requests.post(url, data=body, timeout=60, headers={
            "Authorization": f"Bearer {client.keys['inference']}", "Content-Type": content_type, **headers})
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
        answer = response.json()
        assert {"code", "type", "message"} <= set(answer) and answer["code"] == response.status_code, name
        assert not marker.exists(), f"the server ran the {name}"
    pickle.loads(hostile_payloads(str(marker))["pickle, raw"][0])  # the payloads do run when unpickled
    assert marker.is_dir()
    assert {w["pid"] for w in client.describe_model(MODEL).json()[0]["workers"]} == workers
    assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200


def pickled_model(path, marker: str) -> None:
    """A model.pt that is a pickle running os.mkdir(marker) when loaded with torch.load(weights_only=False)."""
    torch.save(MakesMarker(marker), str(path))


def other_torchscript(path, marker: str) -> None:
    """A valid TorchScript model, just not the one the archive was built with."""
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(path))


@pytest.mark.server
@pytest.mark.parametrize("replacement", [other_torchscript, pickled_model], ids=["torchscript", "pickle"])
def test_tampered_archive_is_refused_while_a_good_one_serves(model_store, client, tmp_path, replacement):
    """Same provenance.json, different model.pt: the model is never loaded and every request gets
    an immediate 503 that says why (a worker that failed to load instead would be restarted
    forever by TorchServe while requests waited in its queue with no answer). A model.pt that is
    not TorchScript at all gets the same answer: the hash is checked before anything loads it."""
    marker = tmp_path / "model-file-ran"
    store = tmp_path / "store"
    store.mkdir()
    other = tmp_path / "other.pt"
    replacement(other, str(marker))
    with (
        zipfile.ZipFile(model_store / f"{MODEL}.mar") as good,
        zipfile.ZipFile(store / f"{MODEL}.mar", "w", zipfile.ZIP_DEFLATED) as tampered,
    ):
        for item in good.infolist():
            data = other.read_bytes() if item.filename == MODEL_FILE else good.read(item)
            tampered.writestr(item, data)
    with TorchServe.on_free_ports(tmp_path / "run", store) as server:
        tampered_client = server.client(timeout=30)
        started = time.monotonic()
        responses = [tampered_client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg") for _ in range(3)]
        assert time.monotonic() - started < 10, "refusals must be immediate"
        for response in responses:
            assert response.status_code == 503, response.text
            answer = response.json()
            assert answer["type"] == "ArchiveIntegrityError" and "predictions" not in answer
            assert "provenance.json records" in answer["message"] and "rebuild" in answer["message"]
        log = (server.log_dir / "model_log.log").read_text(errors="replace")
        assert "refusing to serve it" in log and "Traceback" not in log
        custom = tampered_client.describe_model(MODEL, customized=True).json()[0]["customizedMetadata"]
        assert custom["serving"] is False and "provenance.json records" in custom["problem"]
        with pytest.raises(RuntimeError, match="ArchiveIntegrityError"):
            server.warm_up([MODEL])  # what `make run` / `make serve` do after start: they fail loudly
    assert not marker.exists(), "the tampered model file was unpickled"
    # The untouched archive in the session server still serves, and says so.
    assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200
    assert client.describe_model(MODEL, customized=True).json()[0]["customizedMetadata"]["serving"] is True
