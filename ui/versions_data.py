"""The operator page's versions, free of Streamlit: each registered version with its gate figures, and
promote / roll back through service/versions (the management key stays in the UI's Python process).

The version record (versions.json: when registered, gate figures, the order of defaults) lives in the
server's run directory, beside the key file the UI already reads (TS_KEY_FILE).
"""

from __future__ import annotations

from pathlib import Path

import requests

from service.client.api import Settings, TorchServeClient
from service.versions.operations import promote_version, rollback, version_rows
from service.versions.store import VersionError


def run_dir_of(settings: Settings) -> Path | None:
    return Path(settings.key_file).parent if settings.key_file else None


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def version_table(client: TorchServeClient, settings: Settings) -> tuple[list[dict], str | None]:
    """(one row per version, None) or ([], why not): version, default, workers, registered, figures."""
    run_dir = run_dir_of(settings)
    if run_dir is None:
        return [], "no key file (TS_KEY_FILE): versions need the management API"
    try:
        rows = version_rows(client, run_dir, settings.model)
    except (VersionError, requests.RequestException, ValueError, OSError) as e:
        return [], str(e)
    table = []
    for r in rows:
        gate = r["gate"] or {}
        table.append(  # the gate first: a narrow grid shows the leftmost columns
            {
                "version": r["version"],
                "default": "default" if r["default"] else "",
                "gate": ("passed" if gate.get("passed") else "refused") if gate else "",
                "gate accuracy": _pct(r["gate_accuracy"]),
                "default's": _pct((gate.get("default") or {}).get("accuracy")),
                "agreement": _pct(gate.get("agreement")),
                "report accuracy": _pct(r["report_accuracy"]),
                "workers": r["workers"],
                "registered": r["registered"],
            }
        )
    return table, None


def promote(client: TorchServeClient, settings: Settings, version: str) -> tuple[bool, str]:
    try:
        promote_version(client, run_dir_of(settings) or Path("."), settings.model, version)
    except (VersionError, requests.RequestException, OSError) as e:
        return False, str(e)
    return True, f"{settings.model} version {version} is the default"


def roll_back(client: TorchServeClient, settings: Settings) -> tuple[bool, str]:
    try:
        previous = rollback(client, run_dir_of(settings) or Path("."), settings.model)
    except (VersionError, requests.RequestException, OSError) as e:
        return False, str(e)
    return True, f"{settings.model} version {previous} is the default again"
