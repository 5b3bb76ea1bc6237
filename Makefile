# One entry point for people and CI. `make run` serves, `make test` tests (.ci/run calls it).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_STORE := model_store
# The default model's archive; its name is service/names.py's DEFAULT_MODEL (read once the venv exists).
ARCHIVE = $(MODEL_STORE)/$(shell $(PY) -c "from service.names import DEFAULT_MODEL; print(DEFAULT_MODEL)").mar
# WEIGHTS: empty = official torchvision weights (downloaded), "random" = untrained test
# weights, anything else = path to a local state dict such as resnet18-f37072fd.pth.
WEIGHTS ?=
ifeq ($(WEIGHTS),)
ARCHIVE_ARGS :=
else ifeq ($(WEIGHTS),random)
ARCHIVE_ARGS := --random-weights
else
ARCHIVE_ARGS := --weights $(WEIGHTS)
endif
# RUNTIME: torchscript (default), onnxruntime or openvino; PRECISION=bf16 with openvino on a CPU with
# bf16 (docs/ARCHIVE.md). Either one rebuilds the archive: make run RUNTIME=onnxruntime WEIGHTS=random
RUNTIME ?=
PRECISION ?=
ARCHIVE_ARGS += $(if $(RUNTIME),--runtime $(RUNTIME)) $(if $(PRECISION),--precision $(PRECISION))

.PHONY: setup archive run run-deps serve stop ui test test-deps lint clean soak bench

setup: $(STAMP)

$(STAMP): requirements.txt requirements-serve.txt requirements-ui.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m service.client.grpc_api
	touch $@

# An existing archive is reused unless WEIGHTS=..., RUNTIME=..., PRECISION=... or FORCE=1 asks for a new one.
archive: $(STAMP)
	@if [ -f $(ARCHIVE) ] && [ -z "$(WEIGHTS)$(FORCE)$(RUNTIME)$(PRECISION)" ]; then \
		echo "using $(ARCHIVE) (make archive WEIGHTS=..., RUNTIME=... or FORCE=1 rebuilds it)"; \
	else $(PY) scripts/build_archive.py --force $(ARCHIVE_ARGS); fi

run: archive run-deps
	$(PY) scripts/serve.py run

serve: archive run-deps
	$(PY) scripts/serve.py start

# Debian's nginx: the front `make run` puts before TorchServe, as the image does (service/doors/front.py).
run-deps:
	@test -x /usr/sbin/nginx || { echo "installing Debian's nginx (the front before TorchServe)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends nginx; }

stop:
	@if [ -x $(PY) ]; then $(PY) scripts/serve.py stop; fi

# The web UI alone, as a client of a running TorchServe (`make serve`, or TS_INFERENCE_URL,
# TS_MANAGEMENT_URL, TS_KEY_FILE, TS_MODEL for another one). `make run` starts it too.
# Ports and addresses are service/names.py's; UI_PORT=8600 make ui picks another port.
# OPERATOR=1 adds the operator page (workers, memory, live charts, scaling): off by default.
ui: $(STAMP)
	$(PY) scripts/serve.py ui $(if $(UI_PORT),--ui-port $(UI_PORT)) $(if $(filter 1,$(OPERATOR)),--operator)

# Debian's Chromium for the browser tests (tests/test_ui_browser.py drives /usr/bin/chromium through
# Playwright for Python, which requirements-dev.txt installs; Playwright cannot download its own here).
test-deps: $(STAMP) run-deps
	@test -x /usr/bin/chromium || { echo "installing Debian's chromium for the browser tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@# Debian's Prometheus (and promtool) for tests/test_prometheus.py and the dashboard check (a plain process).
	@missing=; test -x /usr/bin/prometheus -a -x /usr/bin/promtool || missing=prometheus; \
	if [ -n "$$missing" ]; then echo "installing Debian's $$missing for the tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing; fi
	@$(PY) -c "import playwright.sync_api" || { echo "Playwright for Python is missing: make setup"; exit 1; }

test: $(STAMP) test-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# Overload soak on a TorchServe of its own (loopback, free ports): about 2x the measured
# capacity for SOAK_SECONDS (default 180); `make test` runs a 20 s version.
SOAK_SECONDS ?= 180
soak: archive
	$(PY) scripts/soak.py --duration $(SOAK_SECONDS) --json test-output/soak-long.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Removes only what the build made and can remake (test output, run state, the default archive when the
# builder made it); keeps var/feedback, fine-tuned and bring-your-own archives and reports (scripts/clean.py).
clean:
	$(PYTHON) -m scripts.clean

# Served throughput/latency per runtime vs its in-process limit, LitServe and a Flask baseline (about 7 minutes);
# writes docs/PERFORMANCE.md and docs/performance.json. BENCH_ARGS=--sweep for the config sweep.
bench: $(STAMP)
	$(PY) scripts/bench.py $(BENCH_ARGS)

# The Dockerfile's image built and run for real with Podman (about 10-20 minutes; not part of
# `make test`): installs podman/runc/debootstrap, makes a local stand-in for the base image once
# (deploy/podman/prepare-base.sh), builds with WEIGHTS=random, runs server and UI, checks them
# from outside (tests/container). Figures: test-output/container-test.json.
.PHONY: container-test
container-test: $(STAMP)
	deploy/podman/prepare-base.sh
	@# Each rebuild leaves the previous image untagged (7 GB): prune those, pass or fail; tagged ones stay as the cache.
	$(PY) -m pytest -m container tests/container -v; status=$$?; \
		podman --runtime runc --cgroup-manager=cgroupfs image prune -f >/dev/null; exit $$status
	@cat test-output/container-test.json

# Fine-tune on a folder of labelled photos (one sub-folder per class) and build model_store/$(NAME).mar
# with its report beside it (docs/FINETUNE.md). VERSION: the model version (default: one above the
# highest of NAME in model_store; docs/FINETUNE.md deploys it). FINETUNE_ARGS: e.g. --unfreeze, --random-weights.
# `.venv/bin/python scripts/finetune.py --make-demo-data demo-shapes` writes a folder to try it on.
.PHONY: finetune
finetune: $(STAMP)
	@test -n "$(DATA)" -a -n "$(NAME)" || { echo "usage: make finetune DATA=folder NAME=model-name [FINETUNE_ARGS=...]"; exit 2; }
	$(PY) scripts/finetune.py "$(DATA)" --model-name "$(NAME)" $(if $(VERSION),--version $(VERSION)) $(FINETUNE_ARGS)
