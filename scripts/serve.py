"""Start, watch and stop TorchServe (and the UI) for this project.

  python scripts/serve.py run      # foreground: TorchServe + UI, Ctrl-C stops both (make run)
  python scripts/serve.py start    # background TorchServe, returns when READY (make serve)
  python scripts/serve.py stop     # stops what start/run started (make stop)
  python scripts/serve.py status

Each server gets a run directory holding its rendered config.properties, key_file.json,
logs/ and a PID file, so several servers (a `make run` and a test session) can coexist.
The tests and the benchmark use the same TorchServe class on free ports.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.client import Endpoints, TorchServeClient  # noqa: E402

RUN_DIR = ROOT / "var"
CONFIG = ROOT / "config" / "config.properties"
LOG_CONFIG = ROOT / "config" / "log4j2.xml"
MODEL_STORE = ROOT / "model_store"
VENV_BIN = Path(sys.executable).parent
UI_APP = ROOT / "ui" / "app.py"
UI_PORT = 8501
PID_FILE = "server.pid"
# torchserve's launcher keeps its own PID file in $TMPDIR (the run directory here) and refuses
# to start while the PID in it names any live process, even an unrelated one that reused it.
TORCHSERVE_PID_FILE = ".model_server.pid"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def render_config(base: Path, overrides: dict[str, str], dest: Path) -> None:
    """Copy config.properties with some keys replaced, keeping its comments and order."""
    lines, seen = [], set()
    for line in Path(base).read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    dest.write_text("\n".join(lines) + "\n")


def server_endpoints(run_dir: Path) -> Endpoints | None:
    config = Path(run_dir) / "config.properties"
    if not config.is_file():
        return None
    props = read_properties(config)
    return Endpoints(props["inference_address"], props["management_address"], props["metrics_address"])


def test_image() -> bytes:
    """A small generated JPEG for warm-up, so `make run` needs no sample files."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((320, 240)).save(buffer, "JPEG")
    return buffer.getvalue()


class TorchServe:
    """One TorchServe server: its run directory, config, process group and client."""

    def __init__(
        self,
        run_dir: Path = RUN_DIR,
        model_store: Path = MODEL_STORE,
        config: Path = CONFIG,
        overrides: dict[str, str] | None = None,
        log_config: Path | None = LOG_CONFIG,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.model_store = Path(model_store).resolve()
        self.base_config = Path(config)
        self.overrides = {"model_store": str(self.model_store), **(overrides or {})}
        self.log_config = log_config  # None: TorchServe's built-in logging
        self.process: subprocess.Popen | None = None

    @classmethod
    def on_free_ports(cls, run_dir: Path, model_store: Path, **overrides: str) -> TorchServe:
        ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc_i", "grpc_m")}
        return cls(
            run_dir,
            model_store,
            overrides={
                "inference_address": f"http://127.0.0.1:{ports['inference']}",
                "management_address": f"http://127.0.0.1:{ports['management']}",
                "metrics_address": f"http://127.0.0.1:{ports['metrics']}",
                "grpc_inference_port": str(ports["grpc_i"]),
                "grpc_management_port": str(ports["grpc_m"]),
                "initial_worker_port": str(20000 + ports["inference"] % 20000),
                **overrides,
            },
        )

    @property
    def config_file(self) -> Path:
        return self.run_dir / "config.properties"

    @property
    def key_file(self) -> Path:
        return self.run_dir / "key_file.json"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def endpoints(self) -> Endpoints:
        props = read_properties(self.config_file)
        return Endpoints(props["inference_address"], props["management_address"], props["metrics_address"])

    def client(self, timeout: float = 60) -> TorchServeClient:
        return TorchServeClient(self.endpoints, key_file=self.key_file, timeout=timeout)

    def start(self) -> None:
        if running_pid(self.run_dir):
            raise RuntimeError(f"a server from {self.run_dir} is already running; stop it first (make stop)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.key_file.unlink(missing_ok=True)
        (self.run_dir / TORCHSERVE_PID_FILE).unlink(missing_ok=True)  # left by a killed server
        render_config(self.base_config, self.overrides, self.config_file)
        env = {
            **os.environ,
            "TMPDIR": str(self.run_dir),  # TorchServe's own PID file lives in $TMPDIR
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
        }
        command = [str(VENV_BIN / "torchserve"), "--foreground", "--ncs", "--ts-config", str(self.config_file)]
        if self.log_config:
            command += ["--log-config", str(self.log_config)]
        with open(self.log_dir / "console.log", "ab") as console:
            self.process = subprocess.Popen(
                command,
                cwd=self.run_dir,
                env=env,
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        write_pid(self.run_dir, self.process.pid)

    def wait_ready(self, timeout: float = 180) -> list[str]:
        """Wait until every model in the store has its minimum workers READY; return their names."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited with {self.process.returncode}; see {self.log_dir}")
            try:
                client = self.client(timeout=5)
                models = [m["modelName"] for m in client.list_models().json()["models"]]
                if models and all(self._model_ready(client, name) for name in models):
                    return models
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"TorchServe not ready after {timeout:.0f} s; see {self.log_dir}/model_log.log")

    @staticmethod
    def _model_ready(client: TorchServeClient, name: str) -> bool:
        for version in client.describe_model(name).json():
            ready = sum(w["status"] == "READY" for w in version["workers"])
            if ready < max(1, version["minWorkers"]):
                return False
        return True

    def warm_up(self, models: list[str]) -> dict[str, dict]:
        """One real inference per model; returns each model's self-description from the answer."""
        client = self.client()
        described = {}
        for name in models:
            response = client.predict(name, test_image(), filename="warm-up.jpg")
            if response.status_code != 200:
                raise RuntimeError(f"warm-up inference on {name} failed: {response.status_code} {response.text}")
            described[name] = response.json()["model"]
        return described

    def __enter__(self) -> TorchServe:
        """Started and READY; stopped again on leaving the with-block, whatever happened."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30) -> None:
        """Stop the whole process group (also when the launcher died and Java lives on) and
        remove both PID files, ours and TorchServe's own, so nothing blocks the next start."""
        record = read_pid(self.run_dir)
        if self.process:
            stop_group(self.process.pid, timeout)
            self.process.wait()
        elif record:
            stop_group(record["pid"], timeout, since=record["created"])
        (self.run_dir / PID_FILE).unlink(missing_ok=True)
        (self.run_dir / TORCHSERVE_PID_FILE).unlink(missing_ok=True)


def write_pid(run_dir: Path, pid: int) -> None:
    created = psutil.Process(pid).create_time()
    (run_dir / PID_FILE).write_text(json.dumps({"pid": pid, "created": created}))


def read_pid(run_dir: Path) -> dict | None:
    """The PID file's record {"pid", "created"}, whether or not that process still runs."""
    try:
        record = json.loads((Path(run_dir) / PID_FILE).read_text())
        return {"pid": int(record["pid"]), "created": float(record["created"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pid(run_dir: Path) -> int | None:
    """The PID in the run directory's PID file if any process of its group still runs (the
    launcher, or Java after the launcher died); a stale file is removed."""
    record = read_pid(run_dir)
    if record and group_members(record["pid"], since=record["created"]):
        return record["pid"]
    (Path(run_dir) / PID_FILE).unlink(missing_ok=True)
    return None


def group_members(pgid: int, since: float = 0.0) -> list[psutil.Process]:
    """Live (not zombie) processes of process group `pgid` started at `since` or later.

    Servers and the UI start in their own session, so their group id is the launcher's PID;
    `since` (the launcher's start time) keeps a later process that reused the number out."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.create_time() >= since and _alive(p):
                members.append(p)
        except (OSError, psutil.Error):
            pass
    return members


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_group(pid: int, timeout: float, since: float = 0.0) -> None:
    """SIGTERM the process group (launcher, Java, workers), SIGKILL whatever outlives the timeout.

    A zombie counts as stopped: its parent (maybe not us) reaps it."""
    members = group_members(pid, since)
    if not members:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        for p in members:
            try:
                p.send_signal(sig)  # psutil checks the PID still names the same process
            except psutil.Error:
                pass
        deadline = time.monotonic() + wait
        while (members := [p for p in members if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not members:
            return


def start_ui(server: TorchServe, port: int = UI_PORT, log_file: Path | None = None) -> subprocess.Popen:
    """The Streamlit page as a client of this server: it gets the addresses and the key file's path
    (ui/.streamlit/config.toml holds the page's own settings). Stop it with stop_group(ui.pid)."""
    endpoints = server.endpoints
    env = {
        **os.environ,
        "TS_INFERENCE_URL": endpoints.inference,
        "TS_MANAGEMENT_URL": endpoints.management,
        "TS_METRICS_URL": endpoints.metrics,
        "TS_KEY_FILE": str(server.key_file),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        str(VENV_BIN / "streamlit"),
        "run",
        str(UI_APP),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
    ]
    with open(log_file or server.log_dir / "ui.log", "ab") as log:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def print_banner(server: TorchServe, models: dict[str, dict], ui_port: int | None) -> None:
    e = server.endpoints
    model = next(iter(models))
    print("\nTorchServe is ready:")
    for name, info in models.items():
        warning = "   <- RANDOM WEIGHTS: answers mean nothing" if info.get("random_weights") else ""
        print(f"  model {name} {info.get('version')} ({info.get('arch')}, weights {info.get('weights')}){warning}")
    print(f"""
  inference   {e.inference}/predictions/{model}
  management  {e.management}/models
  metrics     {e.metrics}/metrics   (Prometheus)""")
    if ui_port:
        print(f"  web UI      http://127.0.0.1:{ui_port}")
    print(f"""
Call it (tokens are in {server.key_file}):
  TOKEN=$(python3 -c "import json;print(json.load(open('{server.key_file}'))['inference']['key'])")
  curl -H "Authorization: Bearer $TOKEN" -T photo.jpg {e.inference}/predictions/{model}
  curl -H "Authorization: Bearer $TOKEN" -H "X-TopK: 5" -T photo.jpg {e.inference}/predictions/{model}
Workers:  python scripts/manage.py describe {model}   |   python scripts/manage.py scale {model} 2
""")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "start", "stop", "status"])
    p.add_argument("--run-dir", type=Path, default=RUN_DIR)
    p.add_argument("--model-store", type=Path, default=MODEL_STORE)
    p.add_argument("--no-ui", action="store_true", help="run: TorchServe only")
    args = p.parse_args(argv)
    server = TorchServe(args.run_dir, args.model_store)

    if args.command == "stop":
        pid = running_pid(args.run_dir)
        server.stop()
        print("stopped" if pid else "nothing was running")
        return 0
    if args.command == "status":
        pid = running_pid(args.run_dir)
        print(f"running (pid {pid}), run directory {args.run_dir}" if pid else "not running")
        return 0 if pid else 1
    if not any(args.model_store.glob("*.mar")):
        print(f"no archive in {args.model_store}: run `make archive` first", file=sys.stderr)
        return 2

    # Ctrl-C raises KeyboardInterrupt; a SIGTERM (kill, a process manager) takes the same way out.
    signal.signal(signal.SIGTERM, _interrupt)
    server.start()
    ui = None
    started = False
    try:
        models = server.warm_up(server.wait_ready())
        if args.command == "start":
            print_banner(server, models, None)
            started = True
            return 0
        if UI_APP.is_file() and not args.no_ui:
            ui = start_ui(server)
        print_banner(server, models, UI_PORT if ui else None)
        print("Ctrl-C stops everything.")
        while server.process.poll() is None:
            time.sleep(1)
        print(f"TorchServe exited with {server.process.returncode}; see {server.log_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except (RuntimeError, TimeoutError) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave Java running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ui is not None:
            stop_group(ui.pid, 10)
        if not started:
            server.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
