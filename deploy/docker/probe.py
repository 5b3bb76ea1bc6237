#!/usr/bin/env python3
"""Container health probe for TorchServe: a thin CLI over the project's client (service.client.api).

  probe.py live    GET /ping answers 200 (the server process answers)
  probe.py ready   live, and every registered model has at least minWorkers (>= 1) workers READY

Addresses come from the config TorchServe runs with ($TS_CONFIG_FILE), keys from its key file
($TS_KEY_FILE, default the image's /srv/run/key_file.json). The client re-reads the key file after a restart and
renews an expired key with the API key, as every client of this project does, so the probe keeps
passing past token_expiration_min. Exit 0 = healthy, 1 = not, 2 = usage.
Used by the Dockerfile's HEALTHCHECK and the Kubernetes readiness probe; the image has the
repository at /srv/app on PYTHONPATH, and a checkout works as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import requests

from service.client.api import Endpoints, TorchServeClient, ready_workers
from service.names import IMAGE_CONFIG, IMAGE_KEY_FILE
from service.properties import read_properties

TIMEOUT = float(os.environ.get("PROBE_TIMEOUT", "4"))


def local(address: str) -> str:
    """http://0.0.0.0:8080 -> http://127.0.0.1:8080: the probe runs next to the server."""
    return address.replace("://0.0.0.0:", "://127.0.0.1:").rstrip("/")


def client_from(config: Path, key_file: Path) -> TorchServeClient:
    props = read_properties(config)
    defaults = Endpoints()
    endpoints = Endpoints(
        local(props.get("inference_address", defaults.inference)),
        local(props.get("management_address", defaults.management)),
        local(props.get("metrics_address", defaults.metrics)),
    )
    return TorchServeClient(endpoints, key_file=key_file, timeout=TIMEOUT)


def live(client: TorchServeClient) -> list[str]:
    response = client.ping()
    return [] if response.status_code == 200 else [f"/ping answered {response.status_code}: {response.text[:200]}"]


def ready(client: TorchServeClient) -> list[str]:
    problems = live(client)
    if problems:
        return problems
    response = client.list_models()
    if response.status_code != 200:
        return [f"GET /models answered {response.status_code}: {response.text[:200]}"]
    names = [model["modelName"] for model in response.json().get("models", [])]
    if not names:
        return ["no model is registered"]
    for name in names:
        described = client.describe_model(name)
        if described.status_code != 200:
            problems.append(f"GET /models/{name} answered {described.status_code}")
            continue
        for version in described.json():
            count, wanted = ready_workers(version)
            if count < wanted:
                problems.append(f"{name} v{version.get('modelVersion')}: {count} of {wanted} workers READY")
    return problems


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "ready"
    if mode not in ("live", "ready"):
        print(__doc__, file=sys.stderr)
        return 2
    config = Path(os.environ.get("TS_CONFIG_FILE", IMAGE_CONFIG))
    key_file = Path(os.environ.get("TS_KEY_FILE", IMAGE_KEY_FILE))
    try:
        problems = {"live": live, "ready": ready}[mode](client_from(config, key_file))
    except (OSError, ValueError, KeyError, requests.RequestException) as error:
        problems = [f"{type(error).__name__}: {error}"]
    for problem in problems:
        print(f"not {mode}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
