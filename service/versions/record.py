"""What TorchServe does not remember about versions, kept in the server's run directory (versions.json):
when each was registered, its gate figures and report accuracy, and the order of defaults (for rollback)."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

RECORD_FILE = "versions.json"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class VersionRecord:
    """{model: {"versions": {version: {...}}, "defaults": [oldest ... current]}} in run_dir/versions.json."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RECORD_FILE
        self.data: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def model(self, model: str) -> dict:
        return self.data.setdefault(model, {"versions": {}, "defaults": []})

    def version(self, model: str, version: str) -> dict:
        return self.model(model)["versions"].setdefault(version, {})

    def update(self, model: str, version: str, **facts: object) -> None:
        self.version(model, version).update(facts)
        self.save()

    def made_default(self, model: str, version: str) -> None:
        defaults = self.model(model)["defaults"]
        if not defaults or defaults[-1] != version:
            defaults.append(version)
        self.save()

    def previous_default(self, model: str, current: str, loaded: set[str]) -> str | None:
        """The latest earlier default other than `current` that is still loaded."""
        for version in reversed(self.model(model)["defaults"]):
            if version != current and version in loaded:
                return version
        return None

    def forget(self, model: str, version: str) -> None:
        entry = self.model(model)
        entry["defaults"] = [v for v in entry["defaults"] if v != version]
        if version in entry["versions"]:
            entry["versions"][version]["retired"] = now()
        self.save()

    def save(self) -> None:
        """Written whole and renamed into place: a reader never sees half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".versions-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.path)
