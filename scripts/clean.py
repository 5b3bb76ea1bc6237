#!/usr/bin/env python3
"""`make clean`: remove only what the build made and can make again, and say what goes and what stays.

Goes: test-output/, the run state in var/ (rendered config, key file, logs, PID files), and the default
archive when the builder made it from torchvision weights, a weights file or random weights (`make archive`
makes it again). Stays, always: var/feedback (the corrections people made in the UI), every other archive
in the model store (fine-tuned, bring-your-own), the default archive too when it is fine-tuned or your own
TorchScript, and every report. Runs on the system Python: it needs nothing but the standard library.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

from service.names import DEFAULT_MODEL, FEEDBACK_DIR, MODEL_STORE, ROOT, RUN_DIR

TEST_OUTPUT = ROOT / "test-output"
PROVENANCE = "provenance.json"


def built_by_make(archive: Path) -> bool:
    """The archive's provenance says the builder made it from weights it can read again (not a fine-tune,
    not a TorchScript file of the user's own). An archive that cannot be read is kept: it is not ours to judge."""
    try:
        with zipfile.ZipFile(archive) as mar:
            provenance = json.loads(mar.read(PROVENANCE))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return not provenance.get("training") and not str(provenance.get("weights", "")).startswith("torchscript:")


def removable() -> list[Path]:
    """What `make clean` removes, in the order it says so."""
    paths = [TEST_OUTPUT] if TEST_OUTPUT.exists() else []
    if RUN_DIR.is_dir():
        paths += sorted(p for p in RUN_DIR.iterdir() if p.resolve() != FEEDBACK_DIR.resolve())
    default = MODEL_STORE / f"{DEFAULT_MODEL}.mar"
    if default.is_file() and built_by_make(default):
        paths.append(default)
    return paths


def kept() -> list[Path]:
    """What a person made and `make clean` leaves alone (listed so nobody has to wonder)."""
    going = set(removable())
    people = [FEEDBACK_DIR] if FEEDBACK_DIR.exists() else []
    people += sorted(p for p in MODEL_STORE.glob("*") if p.name != ".gitkeep" and p not in going)
    return people


def main() -> int:
    for path in removable():
        print(f"removing {path.relative_to(ROOT)}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for path in kept():
        print(f"keeping  {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
