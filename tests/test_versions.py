"""Model versions on a real TorchServe with real fine-tuned archives: deploy beside the default, the gate,
promotion and rollback under load (no request lost), a random-weights candidate refused, differing
labels refused unless --new-classes, retire. Everything goes through scripts/manage.py's command line.

v1: one epoch of the head on generated shapes; v2: 30 epochs of the head on the same data (better);
v3: random weights, same classes; v4: random weights, one class replaced.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from scripts import build_archive, manage
from scripts import finetune as finetune_cli
from service.client.api import TorchServeClient
from service.finetune.demo import make_demo_data
from service.local.torchserve import TorchServe
from service.names import MODEL_CONFIG
from service.versions.record import VersionRecord
from service.versions.store import RETIRED_DIR, Archive

pytestmark = pytest.mark.server

MODEL = "shapes"
CLASSES = {"circle": "circle", "square": "square", "triangle": "triangle", "cross": "cross"}
CLIENTS = 4


def random_version_archive(labels: Path, version: str, export_path: Path, model_config: Path) -> Path:
    """A random-weights archive of MODEL at `version` (seeded by it) for the 48 px shapes."""
    argv = ["--random-weights", "--seed", version, "--labels", str(labels), "--resize", "48", "--crop", "48"]
    argv += ["--model-name", MODEL, "--version", version, "--export-path", str(export_path)]
    build_archive.build(build_archive.parse_args([*argv, "--model-config", str(model_config)]))
    return export_path / f"{MODEL}.mar"


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """The four candidate archives, each built in a folder of its own (as a user's build would be)."""
    root = tmp_path_factory.mktemp("versions")
    data = make_demo_data(root / "data", CLASSES, per_class=24, size=48, seed=1)
    make_demo_data(root / "eval", CLASSES, per_class=8, size=48, seed=99)
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    config.update({"minWorkers": 1, "maxWorkers": 1})
    (root / "model-config.yaml").write_text(yaml.safe_dump(config))
    common = [
        "--model-name",
        MODEL,
        "--random-weights",
        "--image-size",
        "48",
        "--model-config",
        str(root / "model-config.yaml"),
    ]
    runs = {"1": ["--epochs", "1"], "2": ["--epochs", "30", "--patience", "30"]}  # head only: features computed once
    out = {}
    for version, extra in runs.items():
        store = root / f"build-v{version}"
        assert finetune_cli.main([str(data), *common, *extra, "--version", version, "--export-path", str(store)]) == 0
        out[version] = store / f"{MODEL}.mar"
    for version, labels in (("3", sorted(CLASSES)), ("4", ["circle", "square", "star", "triangle"])):
        store = root / f"build-v{version}"
        (root / f"labels-{version}.json").write_text(json.dumps(labels))
        random_version_archive(root / f"labels-{version}.json", version, store, root / "model-config.yaml")
        out[version] = store / f"{MODEL}.mar"
    out["eval"] = root / "eval"
    return out


@pytest.fixture(scope="module")
def server(archives, tmp_path_factory):
    """TorchServe serving v1 (deployed earlier: in the store under its versioned name)."""
    store = tmp_path_factory.mktemp("store")
    shutil.copy(archives["1"], store / f"{MODEL}-v1.mar")
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("run"), store) as s:
        yield s


def manage_cli(server: TorchServe, *argv: str) -> int:
    return manage.main(["--run-dir", str(server.run_dir), *map(str, argv)])


def default_version(server: TorchServe) -> str:
    """The default as the management API reports it."""
    return str(server.client().describe_model(MODEL).json()[0]["modelVersion"])


def registered(server: TorchServe) -> set[str]:
    return {str(v["modelVersion"]) for v in server.client().describe_versions(MODEL).json()}


class Load:
    """CLIENTS closed-loop clients on the model's default version: every request sent is counted, and
    every answer by status and by the version that gave it."""

    def __init__(self, server: TorchServe, images: list[Path]) -> None:
        self.server, self.images = server, images
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent, self.answered, self.statuses, self.versions = 0, 0, Counter(), Counter()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(CLIENTS)]

    def run(self, i: int) -> None:
        client = TorchServeClient(self.server.endpoints, key_file=self.server.key_file, timeout=60)
        n = i
        while not self.stop.is_set():
            image = self.images[n % len(self.images)]
            n += CLIENTS
            with self.lock:
                self.sent += 1
            try:
                response = client.predict(MODEL, image.read_bytes(), filename=image.name)
            except Exception:  # noqa: BLE001 - an exception is a request without an answer: counted below
                continue
            version = response.json()["model"]["version"] if response.status_code == 200 else None
            with self.lock:
                self.answered += 1
                self.statuses[response.status_code] += 1
                self.versions[version] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def figures(self) -> dict:
        errors = sum(n for status, n in self.statuses.items() if status != 200)
        return {
            "clients": CLIENTS,
            "sent": self.sent,
            "answered": self.answered,
            "unanswered": self.sent - self.answered,
            "errors": errors,
            "statuses": dict(self.statuses),
            "by_version": dict(self.versions),
        }


def test_differing_labels_are_refused_naming_the_classes(server, archives, capsys):
    assert manage_cli(server, "deploy", archives["4"], "--eval", archives["eval"]) == 2
    err = capsys.readouterr().err
    assert "only in the candidate: star" in err and "only in the default: cross" in err and "--new-classes" in err
    assert registered(server) == {"1"}
    assert not list(server.model_store.glob("*-v4.mar"))


def test_promote_and_rollback_under_load_lose_no_request(server, archives, capsys, output_dir):
    images = sorted(archives["eval"].rglob("*.*"))
    with Load(server, images) as load:
        time.sleep(2)
        assert manage_cli(server, "deploy", archives["2"], "--eval", archives["eval"], "--promote") == 0
        gate = capsys.readouterr().out
        assert default_version(server) == "2"
        after_promote = server.client().predict(MODEL, images[0].read_bytes(), filename=images[0].name).json()
        time.sleep(2)
        assert manage_cli(server, "rollback", MODEL) == 0
        assert default_version(server) == "1"
        time.sleep(2)
    figures = load.figures()
    print(gate, "\nload during promote and rollback:", figures)
    (output_dir / "versions-switch.json").write_text(json.dumps({"gate": gate, "load": figures}, indent=2) + "\n")
    assert "gate PASSES" in gate and "| accuracy" in gate and "agreement" in gate and "p50 latency" in gate
    assert after_promote["model"]["version"] == "2"
    assert figures["sent"] > 0 and figures["unanswered"] == 0 and figures["errors"] == 0, figures
    assert {"1", "2"} <= set(figures["by_version"]), figures  # both served while the load ran
    summary = VersionRecord(server.run_dir).version(MODEL, "2")["gate"]
    assert summary["candidate"]["accuracy"] > summary["default"]["accuracy"], summary
    assert registered(server) == {"1", "2"}  # the previous default stays loaded
    assert (server.model_store / f"{MODEL}-v2.mar").is_file() and archives["2"].is_file()  # copied, not moved


def test_random_weights_candidate_is_refused_and_never_default(server, archives, capsys):
    assert manage_cli(server, "promote", MODEL, "2") == 0 and default_version(server) == "2"
    assert manage_cli(server, "deploy", archives["3"], "--eval", archives["eval"], "--promote") == 1
    out = capsys.readouterr().out
    assert "gate REFUSED" in out and "not promoted" in out
    assert default_version(server) == "2" and "3" in registered(server)
    assert manage_cli(server, "retire", MODEL, "2") == 2  # the default cannot be retired
    assert "is the default" in capsys.readouterr().err
    assert manage_cli(server, "retire", MODEL, "3") == 0
    assert registered(server) == {"1", "2"} and default_version(server) == "2"
    assert (server.model_store / RETIRED_DIR / f"{MODEL}-v3.mar").is_file()
    assert not (server.model_store / f"{MODEL}-v3.mar").exists()


def test_new_classes_compare_on_the_classes_both_know(server, archives, capsys):
    assert manage_cli(server, "deploy", archives["4"], "--eval", archives["eval"], "--new-classes", "--promote") == 1
    out = capsys.readouterr().out
    assert "recall circle" in out and "recall star" not in out and "recall cross" not in out
    assert "gate REFUSED" in out and default_version(server) == "2"
    gate = VersionRecord(server.run_dir).version(MODEL, "4")["gate"]
    assert gate["classes"] == ["circle", "square", "triangle"] and gate["candidate"]["images"] == 3 * 8


def test_versions_lists_each_version_with_default_and_figures(server, capsys):
    assert manage_cli(server, "versions", MODEL) == 0
    rows = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line
        for line in capsys.readouterr().out.splitlines()[1:-1]
    }
    assert set(rows) == {"1", "2", "4"}
    assert rows["2"].startswith("*") and not rows["1"].startswith("*") and not rows["4"].startswith("*")
    assert "1/1" in rows["2"] and f"{MODEL}-v2.mar" in rows["2"]
    accuracy = Archive.read(server.model_store / f"{MODEL}-v2.mar").report_accuracy
    assert f"{100 * accuracy:.1f} %" in rows["2"]
