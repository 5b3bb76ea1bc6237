#!/usr/bin/env python3
"""Print the `podman build` volume flags that let pip inside a RUN step behave like pip here.

Building on this machine only: its TLS-inspecting proxy needs the machine's CA bundle, and pip's
own config files may add constraints and local wheel directories. Each is mounted read-only at
the path pip's config names, so the Dockerfile needs no change and no image keeps them.
Reads `pip config debug` (which files exist) and `pip config list` (what they name).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CONTAINER_HOME = Path("/root")  # RUN steps before USER run as root


def pip_config(command: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pip", "config", command], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def config_files() -> dict[Path, Path]:
    """Existing pip config files, host path -> path inside the build (a user's file under /root)."""
    files, section = {}, ""
    for line in pip_config("debug").splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1]
        match = re.match(r"^\s+(/\S+), exists: True$", line)
        if match and section in ("global", "site", "user"):
            host = Path(match.group(1))
            user = section == "user" and host.is_relative_to(Path.home())
            files[host] = CONTAINER_HOME / host.relative_to(Path.home()) if user else host
    return files


def named_paths() -> set[Path]:
    """Local files and directories pip's settings name (cert, constraint, find-links, file:// indexes)."""
    paths = set()
    for line in pip_config("list").splitlines():
        _, _, value = line.partition("=")
        for token in value.strip().strip("'\"").split():
            path = Path(token.removeprefix("file://"))
            if not path.is_absolute() or not path.exists():
                continue
            # a PEP 503 index links to ../../files: mount the folder that holds simple/
            paths.add(path.parent if path.name == "simple" else path)
    return paths


def mounts() -> list[str]:
    pairs = {path: path for path in named_paths()} | config_files()
    return [f"-v={host}:{inside}:ro" for host, inside in sorted(pairs.items())]


if __name__ == "__main__":
    print(" ".join(mounts()))
