"""Every command the README shows is run by a test, or listed in NOT_RUN with the reason it is not.

A newcomer copies the README's commands as they are, so each one must work: the commands of its code
blocks and the command-like spans in its text are collected, and each must be in a script a test runs
(docs/quickstart.sh, docs/curl-examples.sh), run by a named test whose source shows it, run here
against a real server (the Python client, the management commands), or in NOT_RUN. A new command that
is none of these fails the test, and so does a mapping the README no longer needs.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from service.doors.budget import BUDGET
from service.local.fronted import FrontedTorchServe
from service.photos import grace_hopper
from tests.conftest import MODEL, SERVED

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Words a command starts with: an inline span that starts with one of them is a command too.
COMMAND_WORDS = (
    "make",
    "curl",
    ".venv/bin/python",
    "python3",
    "docker",
    "kubectl",
    "kustomize",
    "sha256sum",
    "ssh",
    "podman",
    "java",
    "du",
    "cd",
    "bash",
)
# Scripts the tests run as they are: script -> (test file, test function).
SCRIPTS = {
    "docs/quickstart.sh": ("tests/test_readme.py", "test_quickstart_classifies_a_sample_photo_and_renews_the_key"),
    "docs/curl-examples.sh": ("tests/test_reliability.py", "test_readme_curl_examples"),
}
# Run by this module against its own server: the README's lines that start with these.
RUN_HERE = (".venv/bin/python scripts/manage.py describe ", ".venv/bin/python scripts/manage.py scale ")
# Run by another test: command -> (test file, test function, text in that function showing it runs it).
RUN_BY = {
    "make clean": ("tests/test_clean.py", "test_make_clean_keeps_feedback_and_user_archives", '"make", "-s", "clean"'),
    "make serve": ("tests/test_faults.py", "test_ctrl_c_then_start_and_make_stop", 'serve_py("start"'),
    "make stop": ("tests/test_faults.py", "test_ctrl_c_then_start_and_make_stop", 'serve_py("stop"'),
    ".venv/bin/python scripts/serve.py status": (
        "tests/test_faults.py",
        "test_ctrl_c_then_start_and_make_stop",
        'serve_py("status"',
    ),
    "make finetune DATA=var/feedback NAME=shapes": ("tests/test_finetune_serve.py", "trained", "cli.main(argv)"),
    "make finetune": ("tests/test_finetune_serve.py", "trained", "cli.main(argv)"),
    ".venv/bin/python scripts/manage.py deploy model_store/shapes.mar --eval labelled-photos/ --promote": (
        "tests/test_versions.py",
        "test_promote_and_rollback_under_load_lose_no_request",
        '"deploy", archives["2"], "--eval", archives["eval"], "--promote"',
    ),
    ".venv/bin/python scripts/manage.py versions shapes": (
        "tests/test_versions.py",
        "test_versions_lists_each_version_with_default_and_figures",
        '"versions", MODEL',
    ),
    ".venv/bin/python scripts/manage.py rollback shapes": (
        "tests/test_versions.py",
        "test_promote_and_rollback_under_load_lose_no_request",
        '"rollback", MODEL',
    ),
    ".venv/bin/python scripts/manage.py retire shapes 3": (
        "tests/test_versions.py",
        "test_random_weights_candidate_is_refused_and_never_default",
        '"retire", MODEL, "3"',
    ),
    "make run WEIGHTS=random": (
        "tests/test_build_archive.py",
        "test_random_weights_archive_carries_everything",
        '"--random-weights"',
    ),
    "make run WEIGHTS=/path/to/resnet18-f37072fd.pth": (
        "tests/test_build_archive.py",
        "test_local_weights_file",
        '"--weights"',
    ),
}
PUSH = "docker build -t REGISTRY/image-classifier:1.0 . && docker push REGISTRY/image-classifier:1.0"
SET_IMAGE = "cd deploy/k8s && kustomize edit set image image-classifier=REGISTRY/image-classifier:1.0 && cd -"
NOT_RUN = {
    "make run": "the foreground server on the fixed ports until Ctrl-C; what it runs (scripts/serve.py run) is "
    "run and interrupted by tests/test_faults.py on free ports, and the quick start here runs "
    "against the same fronted server",
    "make run RUNTIME=onnxruntime": "make run itself (above); ONNX Runtime archives are built and served by "
    "tests/test_runtimes.py",
    "make test": "the test suite itself (CI runs it through .ci/run)",
    "make container-test": "a test run of its own (tests/container, Podman, 10-20 minutes), not part of make test",
    "make bench": "a benchmark (about 7 minutes), not a test: it writes docs/PERFORMANCE.md",
    "make ui": "Streamlit on the fixed port 8501 until Ctrl-C; the same page (ui/app.py, started by "
    "service/local/ui_launch.py) is driven in Chromium by tests/test_ui_browser.py",
    "make ui OPERATOR=1": "as make ui; the operator page is driven in Chromium by tests/test_ui_operator.py",
    "java -version": "a check for the reader's machine",
    "du -sh .venv": "the measurement the README quotes beside it",
    "sha256sum resnet18-f37072fd.pth": "needs the official weights file, which cannot be downloaded here",
    "docker build -t image-classifier .": "no Docker engine here; make container-test builds the same "
    "Dockerfile's serving target with Podman",
    "docker build --build-arg TORCH_VARIANT=pypi -t image-classifier .": "no Docker engine here; the "
    "pypi variant is not built by make container-test, which builds and runs the CPU default",
    "docker build --target ui -t image-classifier-ui .": "no Docker engine here; make container-test builds "
    "the ui target with Podman and runs it beside the serving image",
    "docker run": "no Docker engine here; make container-test runs the same image with Podman",
    "docker compose up": "no Docker engine here; compose.yaml is checked by tests/test_deploy_manifests.py and "
    "its images built and run with Podman by make container-test",
    "docker compose up --build": "as docker compose up",
    "docker compose down": "as docker compose up",
    PUSH: "no Docker engine or registry here; make container-test builds the same Dockerfile with Podman",
    SET_IMAGE: "no registry here; tests/test_deploy_manifests.py renders the kustomization with its image entry",
    "kubectl apply -k deploy/k8s": "no cluster here; tests/test_deploy_manifests.py renders what it applies and "
    "validates it against the Kubernetes schemas",
}


def logical_lines(block: str) -> list[str]:
    """A shell block's commands: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(" ".join(line.split()))
    return lines


def only_settings(line: str) -> bool:
    """NAME=value NAME=value ...: runs nothing (the scripts set the same names from the environment)."""
    return "$(" not in line and all(re.fullmatch(r"[A-Z_]+=\S+", word) for word in line.split())


def readme_commands(text: str) -> dict[str, str]:
    """Command -> kind ("shell", "inline" or "python") of everything the README shows to run."""
    commands: dict[str, str] = {}
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        if lang in ("bash", "sh", "shell", "console"):
            commands.update({line: "shell" for line in logical_lines(body) if not only_settings(line)})
        elif lang == "python":
            commands[body.strip()] = "python"
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if span.split()[0] in COMMAND_WORDS:
            commands.setdefault(" ".join(span.split()), "inline")
    return commands


def script_lines(script: str) -> set[str]:
    return set(logical_lines((ROOT / script).read_text()))


def function_source(test_file: str, name: str) -> str:
    source = (ROOT / test_file).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(source, node) or ""
    raise AssertionError(f"{test_file} has no function {name}")


def test_every_readme_command_is_run_by_a_test_or_says_why_not():
    commands = readme_commands(README.read_text())
    in_scripts = set().union(*(script_lines(s) for s in SCRIPTS))
    unmapped = [
        c
        for c in commands
        if not (c in in_scripts or c in RUN_BY or c in NOT_RUN or c.startswith(RUN_HERE) or commands[c] == "python")
    ]
    assert not unmapped, f"README commands no test runs (add them to a test, or to NOT_RUN with why): {unmapped}"
    stale = [c for c in (*RUN_BY, *NOT_RUN) if c not in commands]
    assert not stale, f"mapped commands the README no longer shows: {stale}"
    for command, (test_file, name, evidence) in RUN_BY.items():
        assert evidence in function_source(test_file, name), (command, test_file, name)
    for script, (test_file, name) in SCRIPTS.items():
        assert Path(script).name in function_source(test_file, name), (script, test_file, name)


def test_the_command_check_catches_a_new_command():
    """The collector sees block lines, continuations and inline spans; a made-up one would be unmapped."""
    text = "Run `make frobnicate` or:\n\n```bash\nFOO=1\nmake run  # start\ncurl -sS \\\n  http://x\n```\n"
    assert readme_commands(text) == {"make run": "shell", "curl -sS http://x": "shell", "make frobnicate": "inline"}


def test_readme_links_exist_and_length_stays_an_introduction():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    assert len(text.splitlines()) <= 260, "the README is a way in; reference material goes to docs/"


def test_performance_figures_are_rows_of_performance_md():
    """The README quotes figures only from docs/PERFORMANCE.md's measured block."""
    section = README.read_text().split("## Performance", 1)[1].split("\n## ", 1)[0]
    doc = (ROOT / "docs" / "PERFORMANCE.md").read_text()
    measured = doc.split("<!-- bench:begin", 1)[1].split("<!-- bench:end -->", 1)[0]
    figures = re.findall(r"\b\d+\.\d+\b", section)
    assert figures
    missing = [f for f in figures if not re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", measured)]
    assert not missing, missing


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory):
    """The quick start's server: TorchServe behind its doors, as `make run` starts it, on free ports."""
    with FrontedTorchServe.on_free_ports(tmp_path_factory.mktemp("readme"), model_store, vmargs=BUDGET.vmargs) as s:
        yield s


def keys(server) -> dict:
    return json.loads(server.key_file.read_text())


@pytest.mark.server
def test_quickstart_classifies_a_sample_photo_and_renews_the_key(server):
    before = keys(server)
    env = {
        **os.environ,
        "KEY_FILE": str(server.key_file),
        "URL": server.endpoints.inference,
        "MANAGEMENT": server.endpoints.management,
    }
    result = subprocess.run(
        ["bash", str(ROOT / "docs" / "quickstart.sh")], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    first, status, again = (line for line in result.stdout.splitlines() if line.strip())
    answer = json.loads(first)
    assert len(answer["predictions"]) == SERVED.topk
    assert answer["model"]["name"] == MODEL and answer["model"]["random_weights"] is True and answer["warning"]
    assert status == "200" and json.loads(again)["predictions"] == answer["predictions"]  # with the new key
    after = keys(server)
    assert after["inference"]["key"] != before["inference"]["key"]
    assert after["management"]["key"] == before["management"]["key"]
    photo = {"data": grace_hopper().read_bytes(), "timeout": 60}
    url = f"{server.endpoints.inference}/predictions/{MODEL}"
    old = requests.post(
        url, headers={"Authorization": f"Bearer {before['inference']['key']}", "Content-Type": "image/jpeg"}, **photo
    )
    assert old.status_code == 400 and "InvalidKeyException" in old.text  # what an expired key looks like too
    new = requests.post(
        url, headers={"Authorization": f"Bearer {after['inference']['key']}", "Content-Type": "image/jpeg"}, **photo
    )
    assert new.status_code == 200 and new.json()["predictions"] == answer["predictions"]


@pytest.mark.server
def test_python_client_block_runs_as_shown(server, tmp_path):
    [block] = [c for c, kind in readme_commands(README.read_text()).items() if kind == "python"]
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(grace_hopper().read_bytes())
    env = {
        **os.environ,
        "TS_INFERENCE_URL": server.endpoints.inference,
        "TS_KEY_FILE": str(server.key_file),
        "TS_MANAGEMENT_URL": server.endpoints.management,
        "PYTHONPATH": str(ROOT),
    }
    code = block.replace("/path/to/photo.jpg", str(photo))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    top = ast.literal_eval(result.stdout.strip())
    assert set(top) == {"label", "index", "probability"} and 0 <= top["probability"] <= 1


@pytest.mark.server
def test_everyday_management_commands_do_what_the_readme_says(server):
    """describe lists the workers; scale N answers once N workers are READY (min = max = N, synchronous)."""
    lines = [c for c in readme_commands(README.read_text()) if c.startswith(RUN_HERE)]
    assert {line.split()[2] for line in lines} >= {"describe", "scale"}
    outputs = {}
    for line in lines:
        words = line.split()
        argv = [sys.executable, words[1], "--run-dir", str(server.server.run_dir), *words[2:]]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        outputs[words[2]] = result.stdout
        if words[2] == "scale":
            workers = int(words[-1])
            [version] = server.client().describe_model(MODEL).json()
            assert version["minWorkers"] == version["maxWorkers"] == workers
            assert sum(w["status"] == "READY" for w in version["workers"]) == workers
    [described] = json.loads(outputs["describe"])
    assert described["modelName"] == MODEL and described["workers"]
