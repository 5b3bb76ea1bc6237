"""Security defaults: tokens, loopback binding, model API off, local archives only, archive
integrity at load, and a handler that never evaluates what a request carries."""

from __future__ import annotations

import ast
import re
import time
import zipfile

import psutil
import pytest
import requests
import torch

from handler.model_card import MODEL_FILE
from service.photos import grace_hopper
from scripts.serve import CONFIG, TorchServe, read_properties
from tests.conftest import MODEL, ROOT

ADDRESS_KEYS = ("inference_address", "management_address", "metrics_address", "grpc_inference_address",
                "grpc_management_address")


def test_config_binds_loopback_and_keeps_protections_on():
    props = read_properties(CONFIG)
    for key in ADDRESS_KEYS:
        assert re.fullmatch(r"(https?://)?127\.0\.0\.1(:\d+)?", props[key]), (key, props[key])
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "false"
    assert props["max_request_size"].isdigit()


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


@pytest.mark.server
def test_model_api_refuses_register_and_unregister(torchserve, client):
    management = torchserve.endpoints.management
    register = client._call("management", "POST", f"{management}/models",
                            params={"url": "https://example.com/evil.mar"})
    unregister = client._call("management", "DELETE", f"{management}/models/{MODEL}")
    assert register.status_code == 405 and unregister.status_code == 405
    assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200


@pytest.mark.server
def test_tampered_archive_is_refused_while_a_good_one_serves(model_store, client, tmp_path):
    """Same provenance.json, different model.pt: the model is never loaded and every request gets
    an immediate 503 that says why (a worker that failed to load instead would be restarted
    forever by TorchServe while requests waited in its queue with no answer)."""
    store = tmp_path / "store"
    store.mkdir()
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(other))  # a valid, different TorchScript file
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
    # The untouched archive in the session server still serves, and says so.
    assert client.predict(MODEL, grace_hopper().read_bytes(), filename="p.jpg").status_code == 200
    assert client.describe_model(MODEL, customized=True).json()[0]["customizedMetadata"]["serving"] is True


FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__", "input", "breakpoint"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "subprocess", "joblib", "importlib"}


def test_handler_never_evaluates_request_data():
    """No eval/exec, no pickle-like deserializer, no torch.load (pickle) in the handler package;
    the only model loading is torch.jit.load of the archive's own, hash-checked model.pt."""
    for path in sorted((ROOT / "handler").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not {n.split(".")[0] for n in names if n} & FORBIDDEN_MODULES, (path.name, names)
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                assert not (isinstance(func, ast.Name) and name in FORBIDDEN_BUILTINS), (path.name, node.lineno, name)
                if isinstance(func, ast.Attribute) and name in ("load", "loads"):
                    owner = ast.unparse(func.value)
                    # torch.load, yaml.load and numpy.load can run code from the data (pickle, tags)
                    assert owner not in ("torch", "yaml", "np", "numpy"), (path.name, node.lineno, ast.unparse(func))
    text = (ROOT / "handler" / "torchserve_handler.py").read_text()
    initialize = text[text.index("def initialize"):]
    assert initialize.index("verify_model_file(") < initialize.index("load_model(")

