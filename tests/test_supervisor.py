"""The image's entrypoint (deploy/docker/entrypoint.py) run as a plain process: the front answers,
a killed Java frontend makes it exit non-zero within seconds, SIGTERM stops everything with 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from service.local.torchserve import free_ports
from service.names import CONFIG, METRICS_CONFIG, PUBLIC_PORTS, ROOT
from service.properties import render_config
from tests.conftest import MODEL

pytestmark = pytest.mark.server
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.py"


def start_entrypoint(model_store, tmp_path) -> tuple[subprocess.Popen, str, str]:
    ports = free_ports(6 + len(PUBLIC_PORTS))
    doors = dict(zip(PUBLIC_PORTS, ports[6:], strict=True))
    config = tmp_path / "config.properties"
    render_config(CONFIG, {
        "inference_address": f"http://127.0.0.1:{ports[0]}",
        "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}",
        "grpc_inference_port": str(ports[3]),
        "grpc_management_port": str(ports[4]),
        "initial_worker_port": str(20000 + ports[0] % 20000),
        "model_store": str(model_store),
        "disable_token_authorization": "true",
        "metrics_config": str(METRICS_CONFIG),
    }, config)
    env = {
        **os.environ, "TS_CONFIG_FILE": str(config), "FRONT_HOST": "127.0.0.1", "FRONT_PORTS": json.dumps(doors),
        "TS_KEY_FILE": str(tmp_path / "key_file.json"), "OIP_PORT": str(ports[5]),
        "FRONT_RUN_DIR": str(tmp_path / "front"), "TS_LOG_CONFIG": str(ROOT / "config" / "log4j2.xml"),
        "LOG_LOCATION": str(tmp_path / "logs"), "METRICS_LOCATION": str(tmp_path / "logs"), "TMPDIR": str(tmp_path),
    }
    log = open(tmp_path / "entrypoint.log", "wb")
    process = subprocess.Popen([sys.executable, str(ENTRYPOINT)], cwd=tmp_path, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{doors['inference']}", f"http://127.0.0.1:{doors['management']}"


def wait_serving(process: subprocess.Popen, front: str, management: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"entrypoint exited with {process.returncode}"
        try:
            workers = requests.get(f"{management}/models/{MODEL}", timeout=2).json()[0]["workers"]
            if any(w["status"] == "READY" for w in workers) and requests.get(f"{front}/ping", timeout=2).ok:
                return
        except (requests.RequestException, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.5)
    raise TimeoutError("the entrypoint's services did not become ready")


def stop_entrypoint(process: subprocess.Popen) -> None:
    """Whatever the test did: SIGTERM the entrypoint (it stops its services, each in a session of
    its own), then kill anything of it that is left."""
    if process.poll() is not None:
        return
    descendants = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
    for p in descendants:
        try:
            p.kill()
        except psutil.Error:
            pass


def java_in(process: subprocess.Popen) -> psutil.Process:
    for child in psutil.Process(process.pid).children(recursive=True):
        if child.name() == "java":
            return child
    raise AssertionError("no java process under the entrypoint")


def test_killed_frontend_makes_the_entrypoint_exit_non_zero(model_store, tmp_path):
    process, front, management = start_entrypoint(model_store, tmp_path)
    try:
        wait_serving(process, front, management)
        java_in(process).kill()
        started = time.monotonic()
        code = process.wait(timeout=30)
        assert code != 0 and time.monotonic() - started < 15
        # TorchServe's launcher itself exits 0 when its Java process is killed: the supervisor says why it stops.
        assert "stopping the container so that it is restarted" in (tmp_path / "entrypoint.log").read_text()
    finally:
        stop_entrypoint(process)


def test_sigterm_stops_everything_cleanly(model_store, tmp_path):
    process, front, management = start_entrypoint(model_store, tmp_path)
    try:
        wait_serving(process, front, management)
        children = psutil.Process(process.pid).children(recursive=True)
        assert {"nginx", "java"} <= {c.name() for c in children}
        assert any("service.doors.gateway" in " ".join(c.cmdline()) for c in children)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {[p.name() for p in alive]}"
    finally:
        stop_entrypoint(process)
