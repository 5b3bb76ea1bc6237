"""The container's config and health probe on a real local TorchServe (token authorization on,
as in the image), since no Docker engine runs here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from scripts.serve import TorchServe, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKER_CONFIG = ROOT / "deploy" / "docker" / "config.properties"
PROBE = ROOT / "deploy" / "docker" / "probe.py"

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def container_server(model_store, tmp_path_factory):
    """deploy/docker/config.properties with loopback free ports and the test archive; keys
    expire after 6 s so the probe has to renew them."""
    server = TorchServe(
        tmp_path_factory.mktemp("container-run"),
        model_store,
        config=DOCKER_CONFIG,
        overrides={
            "inference_address": f"http://127.0.0.1:{free_port()}",
            "management_address": f"http://127.0.0.1:{free_port()}",
            "metrics_address": f"http://127.0.0.1:{free_port()}",
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": str(free_port()),
            "grpc_management_port": str(free_port()),
            "initial_worker_port": str(20000 + free_port() % 20000),
            "allowed_urls": "file://.*\\\\.mar",
            "token_expiration_min": "0.1",
        },
    )
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
    time.sleep(7)  # past token_expiration_min
    result = probe(container_server, "ready")
    assert result.returncode == 0, result.stderr


def test_probe_usage():
    assert subprocess.run([sys.executable, str(PROBE), "bogus"], capture_output=True).returncode == 2


def test_probe_fails_when_nothing_listens(tmp_path):
    config = tmp_path / "config.properties"
    port = free_port()
    config.write_text(f"inference_address=http://0.0.0.0:{port}\nmanagement_address=http://0.0.0.0:{port}\n")
    env = {**os.environ, "TS_CONFIG_FILE": str(config), "TS_KEY_FILE": str(tmp_path / "none.json")}
    result = subprocess.run([sys.executable, str(PROBE), "ready"], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "not ready" in result.stderr
