"""Podman as the container tests drive it: build the project's image through the Dockerfile users
build, start containers from it with extra `podman run` flags, look at them from outside.

Podman on this machine type needs runc and cgroupfs (crun refuses its hybrid cgroups) and explicit
ulimits on build and run; HEALTHCHECK timers need systemd (absent), so health is checked with
`podman healthcheck run`. Builds use the machine's pip settings through build-time mounts only
(deploy/podman/build_mounts.py): the Dockerfile stays the one users build.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from service.client.api import read_keys

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
BASE_IMAGE = "localhost/python:3.11-slim-bookworm"  # deploy/podman/prepare-base.sh makes it
IMAGE = "localhost/image-classifier:container-test"
OCI_IMAGE = "localhost/image-classifier:container-test-oci"
UI_IMAGE = "localhost/image-classifier-ui:container-test"
RUN_DIR = "/srv/run"  # the image's working directory and volume (Dockerfile)
KEY_FILE = f"{RUN_DIR}/key_file.json"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@dataclass
class Build:
    image: str
    seconds: float
    size_bytes: int
    log: Path


def build_image(log: Path, image: str = IMAGE, image_format: str = "docker", timeout: float = 3600,
                target: str | None = None, **build_args: str) -> Build:
    """The repository's Dockerfile with the stand-in base, its default target (the serving image) unless
    `target` names a stage. "docker" format keeps HEALTHCHECK (what Docker users get); "oci", Podman's
    default, drops HEALTHCHECK and SHELL, so every RUN has to work under /bin/sh. The two formats keep
    separate layer caches."""
    mounts = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "podman" / "build_mounts.py")],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    args = [f"--build-arg={key}={value}" for key, value in {"PYTHON_IMAGE": BASE_IMAGE, **build_args}.items()]
    stage = [f"--target={target}"] if target else []
    command = [*PODMAN, "build", f"--format={image_format}", "--network", "host", *ULIMITS, *mounts, *args,
               *stage, "-t", image, "-f", "Dockerfile", "."]
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"podman build failed ({result.returncode}); see {log}:\n{log.read_text()[-3000:]}"
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    return Build(image, seconds, size, log)


def cpu_torch_args() -> dict[str, str]:
    """Build arguments for the serving image's CPU torch on this machine. PyTorch's CPU index is
    unreachable here; a CPU wheel of torch in a folder pip's own settings name (find-links) is used
    instead, at its version: the one requirements.txt pins if that folder has it. TORCH_CPU_WHEELS set
    in the environment names another folder. Empty (the Dockerfile's defaults: the index) if none."""
    pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    folders = [Path(os.environ["TORCH_CPU_WHEELS"])] if os.environ.get("TORCH_CPU_WHEELS") else [
        Path(token) for line in subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                                               text=True).stdout.splitlines()
        if "find-links" in line for token in line.partition("=")[2].strip("'\" ").split() if Path(token).is_dir()]
    found = {}
    for folder in folders:
        for wheel in folder.glob("torch-*+cpu-cp311-*linux*x86_64.whl"):
            found[wheel.name.split("-")[1]] = folder
    if not found:
        return {}
    version = next((v for v in found if v.split("+")[0] == pin), max(found))
    return {"TORCH_CPU_WHEELS": str(found[version]), "TORCH_VERSION": version}


def layers(image: str) -> list[dict]:
    """`podman history`: each layer's size and the instruction that made it, newest first."""
    history = json.loads(podman("history", "--no-trunc", "--format", "json", image).stdout)
    return [{"bytes": int(layer.get("size", 0)), "created_by": layer.get("CreatedBy") or layer.get("createdBy", "")}
            for layer in history]


def largest_layers(image: str, count: int = 4) -> list[dict]:
    """The biggest layers, each with its size in MB and the first 120 characters of its instruction."""
    biggest = sorted(layers(image), key=lambda layer: -layer["bytes"])[:count]
    return [{"mb": round(layer["bytes"] / 1e6, 1), "created_by": instruction(layer["created_by"])[:120]}
            for layer in biggest]


def instruction(created_by: str) -> str:
    """A layer's instruction without the build arguments Podman prefixes to RUN steps ("|4 A=1 ... /bin/sh -c")."""
    words = " ".join(created_by.split())
    return words[words.index("/bin/sh -c"):] if words.startswith("|") and "/bin/sh -c" in words else words


def layer_files(image: str, folder: Path) -> dict[str, list[str]]:
    """Every file path of every layer of the image (`podman save` as a Docker archive, each layer's tar
    read): what the layers hold, including files a later layer deletes."""
    archive = folder / "image.tar"
    podman("save", "--format", "docker-archive", "-o", str(archive), image, timeout=900)
    files: dict[str, list[str]] = {}
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if member.isfile() and member.name.endswith(".tar"):
                with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                    files[member.name] = layer.getnames()
    archive.unlink()
    return files


class Container:
    """One container of the built image, named, on its own published loopback ports."""

    def __init__(self, name: str, started: float | None = None) -> None:
        self.name = name
        self.started = time.monotonic() if started is None else started  # when `podman run` was called

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *command, timeout=timeout, check=False)

    def host_port(self, container_port: int) -> int:
        ports = json.loads(self.inspect("{{json .NetworkSettings.Ports}}"))
        return int(ports[f"{container_port}/tcp"][0]["HostPort"])

    def url(self, container_port: int) -> str:
        return f"http://127.0.0.1:{self.host_port(container_port)}"

    def healthcheck(self) -> subprocess.CompletedProcess:
        """The image's own HEALTHCHECK command, run once now (no systemd timers here)."""
        return podman("healthcheck", "run", self.name, timeout=60, check=False)

    def wait_healthy(self, timeout: float) -> float:
        """Seconds from `podman run` until the HEALTHCHECK passed; fails if the container exits or time runs out."""
        started = time.monotonic()
        while True:
            result = self.healthcheck()
            if result.returncode == 0:
                return time.monotonic() - self.started
            assert self.inspect("{{.State.Running}}") == "true", f"container exited:\n{self.logs()}"
            assert time.monotonic() - started < timeout, f"not healthy in {timeout} s: {result.stderr}\n{self.logs()}"
            time.sleep(2)

    def keys(self) -> dict[str, str]:
        """TorchServe's keys, read from the key file inside the container (as an operator would)."""
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "key_file.json"
            podman("cp", f"{self.name}:{KEY_FILE}", str(copy))
            return read_keys(copy)

    def main_pid(self) -> int:
        return int(self.inspect("{{.State.Pid}}"))

    def logs(self, tail: int = 60) -> str:
        result = podman("logs", "--tail", str(tail), self.name, check=False)
        return result.stdout + result.stderr

    def stop(self, grace: int) -> tuple[float, int]:
        """`podman stop -t grace`: (seconds it took, the container's exit code)."""
        started = time.monotonic()
        podman("stop", "-t", str(grace), self.name, timeout=grace + 60)
        seconds = time.monotonic() - started
        return seconds, int(self.inspect("{{.State.ExitCode}}"))

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", "--time", "0", self.name, timeout=120, check=False)


def start_container(name: str, image: str, *run_flags: str, command: tuple[str, ...] = ()) -> Container:
    """`podman run -d` of the image with the machine's ulimits and any extra flags (e.g. --memory 2g).
    A leftover container of the same name (an interrupted run) is removed first."""
    podman("rm", "--force", "--time", "0", name, check=False)
    started = time.monotonic()
    podman("run", "-d", "--name", name, *ULIMITS, *run_flags, image, *command)
    return Container(name, started)
