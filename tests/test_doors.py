"""Every door by the same rules: gRPC, OIP (tritonclient) and the management port, through the doors.

A real TorchServe behind the real front (nginx, service/doors/front.py) and the gRPC gateway with the OIP
metadata server (service/doors/gateway), as `make run` and the image run them. tests/container/ repeats the
burst under the pod's memory limit.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from service.client.grpc_api import GrpcClient, bearer, output_data, refusal, stubs
from service.doors.budget import BUDGET
from service.local.fronted import FrontedTorchServe
from service.names import ROOT
from service.photos import grace_hopper
from service.processes import group_members
from tests.conftest import MODEL

pytestmark = pytest.mark.server
NOT_AN_IMAGE = b"not an image at all"


@pytest.fixture(scope="module")
def service(model_store, tmp_path_factory):
    with FrontedTorchServe.on_free_ports(tmp_path_factory.mktemp("doors"), model_store, vmargs=BUDGET.vmargs) as s:
        yield s


@pytest.fixture(scope="module")
def key(service) -> str:
    return service.server.client().keys["inference"]


@pytest.fixture(scope="module")
def photo() -> bytes:
    return grace_hopper().read_bytes()


def rest(service, body: bytes, key: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    return requests.post(f"{service.doors.url('inference')}/predictions/{MODEL}", data=body, headers=headers,
                         timeout=60)


def test_grpc_answers_as_rest_does(service, key, photo):
    expected = rest(service, photo, key).json()
    with GrpcClient(service.doors.public["grpc_inference"], key) as client:
        one = client.predict(MODEL, photo)
        five = client.predict(MODEL, photo, topk=5)
        several = client.infer(MODEL, [photo, NOT_AN_IMAGE, photo])
    assert one.status == 200 and one.body == expected
    assert len(five.body["predictions"]) == 5
    labels = [p["label"] for p in expected["predictions"]]
    k = len(labels)
    assert several["label"] == labels + [""] * k + labels
    assert several["probability"][:k] == pytest.approx([p["probability"] for p in expected["predictions"]])
    assert several["error"][0] == "" and "not a supported image" in several["error"][1]


def test_grpc_without_a_key_is_refused(service, photo):
    with GrpcClient(service.doors.public["grpc_inference"], None) as client, pytest.raises(grpc.RpcError) as refused:
        client.predict(MODEL, photo)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_bad_image_over_grpc_is_invalid_argument_with_the_http_error_as_details(service, key):
    with GrpcClient(service.doors.public["grpc_inference"], key) as client, pytest.raises(grpc.RpcError) as refused:
        client.predict(MODEL, NOT_AN_IMAGE)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal(refused.value) == rest(service, NOT_AN_IMAGE, key).json()


def test_tritonclient_http_checks_readiness_reads_metadata_and_infers(service, key, photo):
    headers = {"Authorization": f"Bearer {key}"}
    client = triton_http.InferenceServerClient(service.doors.public["inference"])
    assert client.is_server_live(headers=headers) and client.is_server_ready(headers=headers)
    assert client.is_model_ready(MODEL, headers=headers)
    metadata = client.get_model_metadata(MODEL, headers=headers)
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "index", "probability", "error"]
    images = triton_http.InferInput("image", [2], "BYTES")
    images.set_data_from_numpy(np.array([base64.b64encode(photo)] * 2, dtype=object), binary_data=False)
    answer = client.infer(MODEL, [images], headers=headers)
    expected = [p["label"] for p in rest(service, photo, key).json()["predictions"]]
    assert list(answer.as_numpy("label")[0]) == expected
    assert answer.as_numpy("label").shape == (2, len(expected))
    bad = triton_http.InferInput("image", [1], "BYTES")
    bad.set_data_from_numpy(np.array([base64.b64encode(NOT_AN_IMAGE)], dtype=object), binary_data=False)
    with pytest.raises(InferenceServerException, match="not a supported image") as refused:
        client.infer(MODEL, [bad], headers=headers)
    assert refused.value.status() == "415"


def test_oip_metadata_needs_the_key_and_a_served_model(service, key):
    url = f"{service.doors.url('inference')}/v2/models"
    assert requests.get(f"{url}/{MODEL}/ready", timeout=10).status_code == 400
    missing = requests.get(f"{url}/no-such-model", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert missing.status_code == 404 and "no-such-model" in missing.json()["error"]


def test_tritonclient_grpc_checks_readiness_reads_metadata_and_infers(service, key, photo):
    """tritonclient sends images in raw_input_contents (which TorchServe's own OIP gRPC drops); the
    gateway reads them, and answers in the same raw form."""
    headers = {"authorization": f"Bearer {key}"}
    client = triton_grpc.InferenceServerClient(service.doors.public["grpc_inference"])
    assert client.is_server_live(headers=headers) and client.is_server_ready(headers=headers)
    assert client.is_model_ready(MODEL, headers=headers)
    metadata = client.get_model_metadata(MODEL, headers=headers)
    assert metadata.name == MODEL and [t.name for t in metadata.inputs] == ["image"]
    images = triton_grpc.InferInput("image", [2], "BYTES")
    images.set_data_from_numpy(np.array([photo, photo], dtype=object))
    answer = client.infer(MODEL, [images], headers=headers)
    expected = rest(service, photo, key).json()["predictions"]
    assert [label.decode() for label in answer.as_numpy("label")[1]] == [p["label"] for p in expected]
    assert list(answer.as_numpy("index")[0]) == [p["index"] for p in expected]
    bad = triton_grpc.InferInput("image", [1], "BYTES")
    bad.set_data_from_numpy(np.array([NOT_AN_IMAGE], dtype=object))
    with pytest.raises(InferenceServerException, match="not a supported image"):
        client.infer(MODEL, [bad], headers=headers)
    with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):  # no key: refused, as over HTTP
        client.is_server_ready()


def test_an_oip_stub_with_contents_gets_rest_s_answer(service, key, photo):
    messages, services = stubs("open_inference_grpc")
    tensor = messages.ModelInferRequest.InferInputTensor(
        name="image", datatype="BYTES", shape=[1], contents=messages.InferTensorContents(bytes_contents=[photo]))
    with grpc.insecure_channel(service.doors.public["grpc_inference"]) as channel:
        answer = services.GRPCInferenceServiceStub(channel).ModelInfer(
            messages.ModelInferRequest(model_name=MODEL, id="one", inputs=[tensor]), metadata=bearer(key), timeout=60)
    labels = output_data(next(o for o in answer.outputs if o.name == "label"))
    assert labels == [p["label"] for p in rest(service, photo, key).json()["predictions"]] and answer.id == "one"


def test_grpc_management_answers_as_rest_does(service):
    messages, services = stubs("management")
    management_key = service.server.client().keys["management"]
    with grpc.insecure_channel(service.doors.public["grpc_management"]) as channel:
        answer = services.ManagementAPIsServiceStub(channel).DescribeModel(
            messages.DescribeModelRequest(model_name=MODEL), metadata=bearer(management_key), timeout=30)
    described = service.server.client().describe_model(MODEL).json()
    assert [v["modelVersion"] for v in json.loads(answer.msg)] == [v["modelVersion"] for v in described]


def test_management_and_metrics_doors_refuse_large_bodies(service):
    body = b"0" * (BUDGET.control_body_bytes + 1)
    for door in ("management", "metrics"):
        response = requests.post(f"{service.doors.url(door)}/models", data=body, timeout=30)
        assert response.status_code == 413 and response.json()["type"] == "RequestTooLarge", door
    messages, services = stubs("management")  # gRPC management: a message over its cap is refused unread
    with grpc.insecure_channel(service.doors.public["grpc_management"]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            services.ManagementAPIsServiceStub(channel).RegisterModel(
                messages.RegisterModelRequest(url="x" * (BUDGET.control_body_bytes + 1)), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


REFUSED_REGISTRATIONS = {
    "https URL": ("/models?url=https://example.com/evil.mar", None),
    "encoded URL": ("/models?url=https%3A%2F%2Fexample.com%2Fevil.mar", None),
    "file URL": ("/models?url=file:///tmp/model_store/evil.mar", None),
    "path outside the store": ("/models?url=%2Ftmp%2Fevil.mar", None),
    "relative path": ("/models?url=../evil.mar", None),
    "a handler of its own": ("/models?url=evil.mar&handler=os", None),
    "a second url": ("/models?url=evil.mar&url=https://example.com/evil.mar", None),
    "url in a JSON body": ("/models", b'{"url": "https://example.com/evil.mar"}'),
    "bare name with a body": ("/models?url=evil.mar", b'{"url": "https://example.com/evil.mar"}'),
    "a workflow": ("/workflows?url=evil.war", None),
}


@pytest.mark.parametrize("name", REFUSED_REGISTRATIONS)
def test_the_management_door_registers_only_bare_store_archive_names(service, name):
    """Even with the management key: a URL, a path, a body or other parameters are refused by the front."""
    management_key = service.server.client().keys["management"]
    path, body = REFUSED_REGISTRATIONS[name]
    response = requests.post(f"{service.doors.url('management')}{path}", data=body, timeout=30,
                             headers={"Authorization": f"Bearer {management_key}", "Content-Type": "application/json"})
    assert response.status_code == 403 and response.json()["type"] == "RegistrationRefused", response.text
    assert "bare file name" in response.json()["message"]


def test_a_bare_store_name_passes_the_door_and_still_needs_the_key(service):
    management_key = service.server.client().keys["management"]
    url = f"{service.doors.url('management')}/models?url=not-in-the-store.mar&initial_workers=1&synchronous=true"
    without = requests.post(url, timeout=30)
    assert without.status_code == 400 and "InvalidKeyException" in without.text  # TorchServe's key check
    with_key = requests.post(url, headers={"Authorization": f"Bearer {management_key}"}, timeout=30)
    assert with_key.status_code == 404 and "not-in-the-store.mar" in with_key.json()["message"]  # TorchServe's
    messages, services = stubs("management")  # gRPC management goes through the same door
    with grpc.insecure_channel(service.doors.public["grpc_management"]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            services.ManagementAPIsServiceStub(channel).RegisterModel(
                messages.RegisterModelRequest(url="https://example.com/evil.mar"), metadata=bearer(management_key),
                timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "RegistrationRefused" in refused.value.details()
    assert [m["modelName"] for m in service.server.client().list_models().json()["models"]] == [MODEL]


def test_a_slow_client_is_dropped_while_others_are_served(service, key, photo):
    host, port = service.doors.public["inference"].rsplit(":", 1)
    slow = socket.create_connection((host, int(port)), timeout=BUDGET.slow_client_s + 15)
    slow.sendall(b"POST /predictions/resnet18 HTTP/1.1\r\nHost: x\r\nContent-")  # and never the rest
    started = time.monotonic()
    assert rest(service, photo, key).status_code == 200
    try:
        leftover = slow.recv(4096)
    except ConnectionResetError:
        leftover = b""
    waited = time.monotonic() - started
    slow.close()
    assert BUDGET.slow_client_s - 1 <= waited <= BUDGET.slow_client_s + 10, waited
    assert b"200 OK" not in leftover


class SpoolWatch:
    """The most bytes the spool folders held at once while the block ran (sampled every 20 ms)."""

    def __init__(self, *folders: Path) -> None:
        self.folders, self.peak, self.stop = folders, 0, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stop.is_set():
            total = 0
            for folder in self.folders:
                for path in folder.rglob("*") if folder.exists() else ():
                    try:
                        total += path.stat().st_size if path.is_file() else 0
                    except OSError:
                        pass  # answered and removed meanwhile
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __enter__(self) -> SpoolWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def java_of(service) -> psutil.Process:
    return next(p for p in group_members(service.server.process.pid) if p.name() == "java")


def grpc_call(address: str, body: bytes, key: str | None) -> str:
    """The call's status: an answer or a refusal, never a dropped call (that would be UNAVAILABLE)."""
    try:
        with GrpcClient(address, key, timeout=180) as client:
            client.predict(MODEL, body)
            return "OK"
    except grpc.RpcError as e:
        return e.code().name


@pytest.mark.parametrize("with_key", [True, False], ids=["valid-key", "no-key"])
def test_grpc_burst_of_maximum_size_calls_is_answered(service, key, photo, with_key):
    java = java_of(service)
    big = os.urandom(BUDGET.max_request_bytes - 2**20)  # within the limit with the message's framing
    address = service.doors.public["grpc_inference"]
    spools = (service.server.run_dir / "gateway-spool", service.server.run_dir / "front")
    with SpoolWatch(*spools) as spooled, ThreadPoolExecutor(48 + 20) as pool:
        calls = [pool.submit(grpc_call, address, big, key if with_key else None) for _ in range(48)]
        photos = [pool.submit(rest, service, photo, key) for _ in range(20)]
        outcomes = Counter(f.result() for f in calls)
        photo_statuses = [f.result().status_code for f in photos]
    assert spooled.peak <= BUDGET.spool_mib * 2**20, f"spooled {spooled.peak / 2**20:.0f} MiB at once"
    # Refused by the gateway or the front (busy), or answered by the handler (413: over max_image_bytes).
    allowed = {"RESOURCE_EXHAUSTED"} | ({"PERMISSION_DENIED"} if not with_key else set())
    assert set(outcomes) <= allowed, outcomes
    assert photo_statuses == [200] * 20, Counter(photo_statuses)
    assert java.is_running() and java_of(service).pid == java.pid, "the frontend was replaced"
    assert service.alive()


def test_the_readme_grpc_example_runs_as_shown(service, tmp_path, photo):
    """docs/grpc_example.py is docs/API.md's gRPC client; run it as it is."""
    good, bad = tmp_path / "photo.jpg", tmp_path / "notes.txt"
    good.write_bytes(photo)
    bad.write_bytes(NOT_AN_IMAGE)
    env = {**os.environ, "GRPC_ADDRESS": service.doors.public["grpc_inference"],
           "KEY_FILE": str(service.server.key_file)}
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "grpc_example.py"), str(good), str(bad)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    top = rest(service, photo, service.server.client().keys["inference"]).json()["predictions"]
    assert lines[0] == f"{good} {top[0]}"
    assert lines[1].startswith(f"{bad} INVALID_ARGUMENT not a supported image")
    assert lines[2] == f"{good} {[p['label'] for p in top]}" and "not a supported image" in lines[3]
