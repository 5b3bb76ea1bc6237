# One entry point for people and CI. `make run` serves, `make test` tests (.ci/run calls it).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_STORE := model_store
ARCHIVE := $(MODEL_STORE)/resnet18.mar
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

.PHONY: setup archive run serve stop ui test test-deps lint clean soak bench

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# An existing archive is reused unless WEIGHTS=... or FORCE=1 asks for a new one.
archive: $(STAMP)
	@if [ -f $(ARCHIVE) ] && [ -z "$(WEIGHTS)$(FORCE)" ]; then \
		echo "using $(ARCHIVE) (make archive WEIGHTS=... or FORCE=1 rebuilds it)"; \
	else $(PY) scripts/build_archive.py --force $(ARCHIVE_ARGS); fi

run: archive
	$(PY) scripts/serve.py run

serve: archive
	$(PY) scripts/serve.py start

stop:
	@if [ -x $(PY) ]; then $(PY) scripts/serve.py stop; fi

ui: $(STAMP)
	PYTHONPATH=. $(VENV)/bin/streamlit run ui/app.py --server.address=127.0.0.1 --server.port=8501 \
		--server.headless=true --browser.gatherUsageStats=false

# Debian's Chromium for the browser tests (Playwright cannot download its own here).
test-deps:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

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

clean:
	rm -rf var test-output $(MODEL_STORE)/*.mar

# Served throughput/latency vs the in-process limit and a Flask baseline (about 6 minutes);
# writes docs/PERFORMANCE.md and docs/performance.json. BENCH_ARGS=--sweep for the config sweep.
bench: $(STAMP)
	$(PY) scripts/bench.py $(BENCH_ARGS)
