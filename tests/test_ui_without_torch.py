"""The web UI and the Python client run without PyTorch (the UI image has none): every module of ui/
and service/client imported, the page rendered against a real TorchServe and a photo classified, in a
Python where importing torch (or torchvision, Captum, TorchServe's worker) raises, and so does importing
what the UI image leaves out of Streamlit's dependencies (pydeck, Arrow Flight: Dockerfile, ui stage)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import MODEL, ROOT

# Installed first on sys.meta_path: any import of these packages fails, even an indirect one.
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("torch", "torchvision", "captum", "ts", "torchserve", "model_archiver", "pydeck", "pyarrow.flight",
               "pyarrow._flight")
    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
                raise ImportError(f"{name} is not in the UI image")
    sys.meta_path.insert(0, Blocked())
""")

CHECK = textwrap.dedent("""
    import importlib, pkgutil, sys
    from pathlib import Path
    import ui, service.client
    for package in (ui, service.client):
        for module in pkgutil.iter_modules(package.__path__):
            if module.ispkg:
                continue
            importlib.import_module(f"{package.__name__}.{module.name}")
    from streamlit.testing.v1 import AppTest
    for page in ("app.py", "operator_app.py"):
        at = AppTest.from_file(str(Path(ui.__file__).parent / page), default_timeout=60)
        at.run()
        assert not at.exception, (page, at.exception)
    from handler.settings import DEFAULTS
    from service.client.api import Settings
    from service.photos import grace_hopper
    from ui.logic import classify
    settings = Settings.from_env()
    outcome = classify(settings.client(timeout=60), settings, grace_hopper().read_bytes(), "g.jpg", DEFAULTS.topk)
    assert outcome.ok and len(outcome.predictions) == DEFAULTS.topk, outcome
    print("classified", outcome.predictions[0]["label"])
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    print("loaded", loaded)
""")


def test_ui_and_client_import_no_torch(torchserve):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPERATOR": "1", "TS_MODEL": MODEL,
           "TS_INFERENCE_URL": torchserve.endpoints.inference, "TS_MANAGEMENT_URL": torchserve.endpoints.management,
           "TS_KEY_FILE": str(torchserve.key_file)}
    env.pop("TS_INFERENCE_KEY", None)
    result = subprocess.run([sys.executable, "-c", BLOCKER + CHECK], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "classified" in result.stdout, result.stdout[-2000:]
    loaded = result.stdout.rsplit("loaded", 1)[1]
    assert "'torch'" not in loaded and "'streamlit'" in loaded
