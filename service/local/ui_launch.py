"""Start the Streamlit page (ui/app.py): beside a server of ours (`make run`, the browser tests),
or alone in the foreground as a client of whatever TS_* points at (`make ui`).

The page's own settings are in ui/.streamlit/config.toml; here only where it listens and
which TorchServe it talks to.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from service.local.torchserve import VENV_BIN, TorchServe
from service.names import ROOT, UI_APP, UI_OPERATOR_APP, UI_PORT
from ui.operator_data import OPERATOR_ENV


def ui_command(port: int = UI_PORT, operator: bool = False) -> list[str]:
    """`streamlit run ui/app.py` on loopback, no browser opened, no usage statistics sent; with
    `operator`, ui/operator_app.py: the same page plus the operator page (workers, scaling)."""
    return [
        str(VENV_BIN / "streamlit"),
        "run",
        str(UI_OPERATOR_APP if operator else UI_APP),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
    ]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The page imports service/ and handler/ from the checkout, whatever the working directory."""
    return {**os.environ, **(extra or {}), "PYTHONPATH": str(ROOT)}


def start_ui(
    server: TorchServe, port: int = UI_PORT, log_file: Path | None = None, operator: bool = False
) -> subprocess.Popen:
    """The page as a client of this server, in its own session: it gets the addresses and the key
    file's path (never a key). `operator` adds the operator page (off by default: it can scale the
    server's workers). Stop it with processes.stop_group(ui.pid)."""
    endpoints = server.endpoints
    env = _env({
        "TS_INFERENCE_URL": endpoints.inference,
        "TS_MANAGEMENT_URL": endpoints.management,
        "TS_METRICS_URL": endpoints.metrics,
        "TS_KEY_FILE": str(server.key_file),
        OPERATOR_ENV: "1" if operator else "0",
    })
    with open(log_file or server.log_dir / "ui.log", "ab") as log:
        return subprocess.Popen(
            ui_command(port, operator),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def exec_ui(port: int = UI_PORT, operator: bool = False) -> None:
    """Replace this process with the page in the foreground (Ctrl-C stops it); the TS_* variables
    of the environment say which TorchServe it calls (service.client.api.Settings)."""
    os.chdir(ROOT)
    command = ui_command(port, operator)
    os.execve(command[0], command, _env({OPERATOR_ENV: "1"} if operator else {OPERATOR_ENV: "0"}))
