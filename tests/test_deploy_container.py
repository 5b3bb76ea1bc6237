"""The container's config and health probe on a real local TorchServe (token authorization on,
as in the image). The image itself is built and run by `make container-test` (tests/container)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from service.client.api import read_keys
from service.local.torchserve import TorchServe, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKER_CONFIG = ROOT / "deploy" / "docker" / "config.properties"
PROBE = ROOT / "deploy" / "docker" / "probe.py"
KEY_LIFETIME_S = 6  # token_expiration_min=0.1 below

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def container_server(model_store, tmp_path_factory):
    """deploy/docker/config.properties with loopback free ports and the test archive; keys
    expire after 6 s so the probe has to renew them."""
    server = TorchServe.on_free_ports(
        tmp_path_factory.mktemp("container-run"),
        model_store,
        grpc_inference_address="127.0.0.1",
        grpc_management_address="127.0.0.1",
        allowed_urls="file://.*\\\\.mar",
        token_expiration_min=str(KEY_LIFETIME_S / 60),
    )
    server.base_config = DOCKER_CONFIG  # on_free_ports moved every address to a loopback free port
    server.start()
    try:
        deadline = time.monotonic() + 180
        while probe(server, "ready").returncode != 0:
            assert time.monotonic() < deadline, probe(server, "ready").stderr
            assert server.process.poll() is None, f"TorchServe exited; see {server.log_dir}"
            time.sleep(1)
        yield server
    finally:
        server.stop()


def probe(server: TorchServe, mode: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TS_CONFIG_FILE": str(server.config_file), "TS_KEY_FILE": str(server.key_file)}
    return subprocess.run(
        [sys.executable, str(PROBE), mode], env={**environment, **env}, capture_output=True, text=True, timeout=30
    )


def ping(server: TorchServe, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.get(f"{server.endpoints.inference}/ping", headers=headers, timeout=5).status_code


def list_models(server: TorchServe, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.get(f"{server.endpoints.management}/models", headers=headers, timeout=5).status_code


def test_token_authorization_is_on(container_server):
    assert container_server.key_file.is_file()
    assert requests.get(f"{container_server.endpoints.inference}/ping", timeout=5).status_code == 400


def test_probe_live_and_ready(container_server):
    assert probe(container_server, "live").returncode == 0
    assert probe(container_server, "ready").returncode == 0


def test_probe_without_key_is_refused(container_server):
    result = probe(container_server, "live", TS_KEY_FILE="/nonexistent/key_file.json")
    assert result.returncode == 1 and "400" in result.stderr


def test_probe_renews_expired_keys(container_server):
    """Once the key file's keys have expired, the probe gets new ones with the API key: the key
    file then holds a different inference and management key, and the new ones are accepted."""
    old = read_keys(container_server.key_file)
    deadline = time.monotonic() + KEY_LIFETIME_S * 5
    while ping(container_server, old["inference"]) == 200 or list_models(container_server, old["management"]) == 200:
        assert time.monotonic() < deadline, "the keys never expired"
        time.sleep(0.5)
    result = probe(container_server, "ready")
    assert result.returncode == 0, result.stderr
    new = read_keys(container_server.key_file)
    assert new["inference"] != old["inference"] and new["management"] != old["management"]
    assert new["api"] == old["api"]
    assert ping(container_server, new["inference"]) == 200
    assert list_models(container_server, new["management"]) == 200
    assert ping(container_server, old["inference"]) == 400


def test_probe_usage():
    assert subprocess.run([sys.executable, str(PROBE), "bogus"], capture_output=True).returncode == 2


def test_probe_fails_when_nothing_listens(tmp_path):
    config = tmp_path / "config.properties"
    port = free_port()
    config.write_text(f"inference_address=http://0.0.0.0:{port}\nmanagement_address=http://0.0.0.0:{port}\n")
    env = {**os.environ, "TS_CONFIG_FILE": str(config), "TS_KEY_FILE": str(tmp_path / "none.json")}
    result = subprocess.run([sys.executable, str(PROBE), "ready"], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "not ready" in result.stderr
