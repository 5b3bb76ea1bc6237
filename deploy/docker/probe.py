#!/usr/bin/env python3
"""Container health probe for TorchServe, standard library only.

  probe.py live    GET /ping answers 200 (the server process answers)
  probe.py ready   live, and every registered model has at least minWorkers (>= 1) workers READY

Reads the addresses from the config TorchServe runs with ($TS_CONFIG_FILE) and, when token
authorization is on, the keys from key_file.json in the server's working directory
($TS_KEY_FILE, default ./key_file.json). An expired key is renewed with the API key
(GET /token on the management port), as a client would. Exit 0 = healthy, 1 = not.
Used by the Dockerfile's HEALTHCHECK and the Kubernetes readiness probe.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_CONFIG = "/srv/app/deploy/docker/config.properties"
TIMEOUT = float(os.environ.get("PROBE_TIMEOUT", "4"))


def properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def local(address: str) -> str:
    """http://0.0.0.0:8080 -> http://127.0.0.1:8080: the probe runs next to the server."""
    return address.replace("://0.0.0.0:", "://127.0.0.1:").rstrip("/")


class Probe:
    def __init__(self, config: Path, key_file: Path) -> None:
        props = properties(config)
        self.inference = local(props.get("inference_address", "http://127.0.0.1:8080"))
        self.management = local(props.get("management_address", "http://127.0.0.1:8081"))
        self.key_file = key_file
        self.keys = self.read_keys()

    def read_keys(self) -> dict[str, str]:
        if not self.key_file.is_file():
            return {}
        data = json.loads(self.key_file.read_text())
        entries = {name.lower(): entry for name, entry in data.items() if isinstance(entry, dict)}
        return {name: entry["key"] for name, entry in entries.items() if "key" in entry}

    def get(self, url: str, kind: str) -> tuple[int, str]:
        for attempt in (1, 2):
            request = urllib.request.Request(url)
            if self.keys.get(kind):
                request.add_header("Authorization", f"Bearer {self.keys[kind]}")
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    return response.status, response.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as error:
                body = error.read().decode("utf-8", "replace")
                if attempt == 1 and error.code == 400 and "InvalidKeyException" in body and self.renew(kind):
                    continue
                return error.code, body
        return 0, ""

    def renew(self, kind: str) -> bool:
        """Re-read the key file (server restarted); else ask for a new key of this kind."""
        fresh = self.read_keys()
        if fresh.get(kind) and fresh.get(kind) != self.keys.get(kind):
            self.keys = fresh
            return True
        if not self.keys.get("api"):
            return False
        request = urllib.request.Request(f"{self.management}/token?type={kind}")
        request.add_header("Authorization", f"Bearer {self.keys['api']}")
        try:  # TorchServe 0.12 answers with an empty body and rewrites key_file.json
            with urllib.request.urlopen(request, timeout=TIMEOUT):
                pass
        except (urllib.error.URLError, OSError):
            return False
        old, self.keys = self.keys.get(kind), self.read_keys()
        return bool(self.keys.get(kind)) and self.keys.get(kind) != old

    def live(self) -> list[str]:
        status, body = self.get(f"{self.inference}/ping", "inference")
        return [] if status == 200 else [f"/ping answered {status}: {body.strip()[:200]}"]

    def ready(self) -> list[str]:
        problems = self.live()
        if problems:
            return problems
        status, body = self.get(f"{self.management}/models", "management")
        if status != 200:
            return [f"GET /models answered {status}: {body.strip()[:200]}"]
        names = [m["modelName"] for m in json.loads(body).get("models", [])]
        if not names:
            return ["no model is registered"]
        for name in names:
            status, body = self.get(f"{self.management}/models/{name}", "management")
            if status != 200:
                problems.append(f"GET /models/{name} answered {status}")
                continue
            for version in json.loads(body):
                ready = sum(w.get("status") == "READY" for w in version.get("workers", []))
                wanted = max(1, int(version.get("minWorkers") or 0))
                if ready < wanted:
                    problems.append(f"{name} v{version.get('modelVersion')}: {ready} of {wanted} workers READY")
        return problems


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "ready"
    if mode not in ("live", "ready"):
        print(__doc__, file=sys.stderr)
        return 2
    config = Path(os.environ.get("TS_CONFIG_FILE", DEFAULT_CONFIG))
    key_file = Path(os.environ.get("TS_KEY_FILE", "key_file.json"))
    try:
        problems = getattr(Probe(config, key_file), mode)()
    except (OSError, ValueError, KeyError) as error:
        problems = [f"{type(error).__name__}: {error}"]
    for problem in problems:
        print(f"not {mode}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
