# syntax=docker/dockerfile:1
# Two images from one Dockerfile (docs/DEPLOY.md): the serving image (TorchServe, the archive, the doors;
# the default target) and the UI image (the Streamlit page and the Python client, no torch).
#
#   docker build -t image-classifier .                                   # CPU torch, official weights (downloaded)
#   docker build --build-arg TORCH_VARIANT=pypi -t image-classifier .    # PyPI's default torch wheel (with CUDA)
#   docker build --build-arg WEIGHTS=random -t image-classifier:test .   # offline, meaningless answers
#   docker build --build-arg WEIGHTS=weights/resnet18-f37072fd.pth .     # a state dict in the build context
#   docker build --target ui -t image-classifier-ui .                    # the web UI
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8081:8081 -p 8082:8082 -p 7070:7070 image-classifier
#
# Ports of the serving image (the doors before TorchServe, which listens on loopback only): 8080 inference,
# 8081 management, 8082 metrics (Prometheus, no token) through the nginx front; 7070 gRPC inference and OIP,
# 7071 gRPC management through the gRPC gateway. Each is bounded by service/doors/budget.py.
#
# Stages: `builder` holds the whole pinned toolchain (requirements.txt: torch + torchvision, the archive
# builder) and makes the archive exactly as `make archive` does; `serving` copies the archive and holds only
# what serving needs (requirements-serve.txt, torch alone, a JRE, nginx); `ui` holds requirements-ui.txt;
# both start from `runtime` (the venv settings they share).

# The base: any image with python3.11 as `python` (pip, venv) on Debian bookworm, the release with
# OpenJDK 17 (trixie ships only 21). `make container-test` passes a local stand-in
# (deploy/podman/base.Containerfile) where no registry is reachable.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# TORCH_VARIANT=cpu (default): the serving stage installs a CPU build of torch, from PyTorch's CPU wheel
# index, or from TORCH_CPU_WHEELS (a local folder or URL for pip --find-links) where that index is out of
# reach. TORCH_VARIANT=pypi: PyPI's default wheel (with CUDA on x86_64). TORCH_VERSION: requirements.txt's
# pin unless named (e.g. 2.13.0+cpu, the CPU build at hand; make container-test proves the archive answers
# the same on it).
ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_CPU_WHEELS=
ARG TORCH_VERSION=

FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_VARIANT
ARG TORCH_CPU_INDEX
ARG TORCH_CPU_WHEELS
# WEIGHTS as in `make archive WEIGHTS=...`: official (download), random, or a file path. RUNTIME and
# PRECISION as in `make archive RUNTIME=... PRECISION=...`; the serving stage installs the runtime's package.
ARG WEIGHTS=official
ARG RUNTIME=
ARG PRECISION=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/build-venv \
    PATH=/opt/build-venv/bin:$PATH \
    PYTHONPATH=/srv/app
WORKDIR /srv/app
COPY requirements.txt requirements-serve.txt requirements-ui.txt ./
# On a connected machine the CPU variant takes torch and torchvision from PyTorch's CPU index here too (a
# smaller download); with TORCH_CPU_WHEELS the builder keeps PyPI's pair (the CPU folder may hold torch alone).
RUN python -m venv "$VIRTUAL_ENV" \
    && if [ "$TORCH_VARIANT" = cpu ] && [ -z "$TORCH_CPU_WHEELS" ]; then \
         pip install --index-url "$TORCH_CPU_INDEX" \
           "$(grep -E '^torch==' requirements.txt)" "$(grep -E '^torchvision==' requirements.txt)"; \
       fi \
    && pip install -r requirements.txt
COPY . .
# Same command as `make archive`. Plain POSIX sh (set -- for the arguments, no pipes): OCI-format builds
# (Podman's default) have no SHELL instruction and run every RUN under /bin/sh.
RUN case "$WEIGHTS" in \
      official|"") set -- ;; \
      random) set -- --random-weights ;; \
      *) set -- --weights "$WEIGHTS" ;; \
    esac \
    && if [ -n "$RUNTIME" ]; then set -- "$@" --runtime "$RUNTIME"; fi \
    && if [ -n "$PRECISION" ]; then set -- "$@" --precision "$PRECISION"; fi \
    && TORCH_HOME=/tmp/torch-home python scripts/build_archive.py --force "$@" \
    && python -m service.client.grpc_api \
    && python -m service.container.archive_runtime model_store requirements.txt > /tmp/runtime.txt

# What both images start from: a venv at /srv/venv on the path, no bytecode, no pip cache.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/srv/venv \
    PATH=/srv/venv/bin:$PATH \
    PYTHONPATH=/srv/app

FROM runtime AS ui
WORKDIR /srv/app
COPY requirements-ui.txt /tmp/
# Left out, about half the venv: bytecode, pip, packages' own test suites (pandas' alone are 60 MB), and two
# parts of Streamlit's dependencies the page never imports (tests/test_ui_without_torch.py blocks them):
# pydeck (map charts) and Arrow Flight (RPC, 35 MB of pyarrow).
RUN python -m venv "$VIRTUAL_ENV" \
    && pip install --no-compile -r /tmp/requirements-ui.txt \
    && pip uninstall -y -q pip setuptools pydeck \
    && find "$VIRTUAL_ENV" -depth -type d -name tests -prune -exec rm -rf {} + \
    && rm -f "$VIRTUAL_ENV"/lib/python3.11/site-packages/pyarrow/*flight* \
    && rm /tmp/requirements-ui.txt
# The page, the client and the few torch-free modules they import (tests/test_ui_without_torch.py).
COPY ui ui
COPY service/__init__.py service/names.py service/photos.py service/
COPY service/client/__init__.py service/client/api.py service/client/upload.py service/client/
COPY service/finetune/__init__.py service/finetune/folders.py service/finetune/
COPY handler/__init__.py handler/errors.py handler/images.py handler/model_card.py handler/settings.py handler/
# The operator page's versions (promote, rollback) read archives' facts and the version record.
COPY service/versions service/versions
RUN useradd --system --uid 10001 --user-group --home-dir /srv/run --shell /usr/sbin/nologin model-server \
    && install -d -o model-server -g model-server -m 0750 /srv/run
USER 10001:10001
WORKDIR /srv/run
ENV TS_INFERENCE_URL=http://torchserve:8080 \
    TS_MANAGEMENT_URL=http://torchserve:8081 \
    TS_KEY_FILE=/srv/run/key_file.json
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
CMD ["streamlit", "run", "/srv/app/ui/app.py", "--server.address=0.0.0.0", "--server.port=8501", \
     "--server.headless=true", "--browser.gatherUsageStats=false", "--client.toolbarMode=viewer"]

FROM runtime AS serving
ARG TORCH_VARIANT
ARG TORCH_CPU_INDEX
ARG TORCH_CPU_WHEELS
ARG TORCH_VERSION

# Versions come with the pinned base image's Debian release. Slim bases have no /usr/share/man, where
# OpenJDK's post-install script links its manual pages (and fails without the folder).
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini nginx \
    && rm -rf /var/lib/apt/lists/* \
    && java -version && nginx -v

WORKDIR /srv/app
COPY requirements.txt requirements-serve.txt /tmp/requirements/
COPY --from=builder /tmp/runtime.txt /tmp/requirements/
# torch alone (the worker never imports torchvision), then the serving packages and the archive's runtime
# (ONNX Runtime or OpenVINO if the archive names one, at requirements.txt's pins). Left out: pip, and torch's
# C++ headers and test binaries (145 MB; they serve only to compile extensions, which serving never does).
RUN python -m venv "$VIRTUAL_ENV" \
    && pins=/tmp/requirements/requirements.txt \
    && version="${TORCH_VERSION:-$(sed -n 's/^torch==//p' "$pins")}" \
    && case "$TORCH_VARIANT" in \
         cpu) if [ -n "$TORCH_CPU_WHEELS" ]; then pip install --find-links "$TORCH_CPU_WHEELS" "torch==$version"; \
              else pip install --index-url "$TORCH_CPU_INDEX" "torch==$version"; fi ;; \
         pypi) pip install "torch==$version" ;; \
         *) echo "TORCH_VARIANT must be cpu or pypi, not $TORCH_VARIANT" >&2; exit 2 ;; \
       esac \
    && pip install -r /tmp/requirements/requirements-serve.txt \
    && if [ -s /tmp/requirements/runtime.txt ]; then pip install -r /tmp/requirements/runtime.txt; fi \
    && pip check \
    && pip uninstall -y -q pip \
    && rm -rf "$VIRTUAL_ENV"/lib/python3.11/site-packages/torch/include "$VIRTUAL_ENV"/lib/python3.11/site-packages/torch/test \
    && if [ "$TORCH_VARIANT" = cpu ]; then python -c "import torch; assert not torch.version.cuda, torch.version.cuda"; fi \
    && rm -rf /tmp/requirements

# What serving runs: the doors, the supervisor, the client they share, the handler's plain modules the OIP
# metadata imports; the archive and the gRPC stubs from the builder. No training, benchmark or UI code.
COPY config config
COPY deploy/docker deploy/docker
COPY handler handler
COPY service/__init__.py service/names.py service/photos.py service/properties.py service/processes.py service/
COPY service/client/__init__.py service/client/api.py service/client/grpc_api.py service/client/upload.py service/client/
COPY service/container service/container
COPY service/doors service/doors
COPY service/local service/local
COPY --from=builder /srv/app/service/client/grpc_stubs service/client/grpc_stubs
COPY --from=builder /srv/app/model_store/*.mar model_store/
RUN python -c "import compileall, sys; sys.exit(not compileall.compile_dir('/srv/app', quiet=1))"

# Non-root; the code and the archive stay root-owned and read-only for it.
RUN useradd --system --uid 10001 --user-group --home-dir /srv/run --shell /usr/sbin/nologin model-server \
    && install -d -o model-server -g model-server -m 0750 /srv/run
USER 10001:10001
WORKDIR /srv/run

ENV TS_CONFIG_FILE=/srv/app/deploy/docker/config.properties \
    TS_KEY_FILE=/srv/run/key_file.json \
    LOG_LOCATION=/srv/run/logs \
    METRICS_LOCATION=/srv/run/logs \
    MALLOC_ARENA_MAX=2

EXPOSE 8080 8081 8082 7070 7071
VOLUME ["/srv/run"]

# Ready = /ping answers 200 and every model has its minimum workers READY (token-aware).
HEALTHCHECK --interval=15s --timeout=6s --start-period=120s --retries=3 \
    CMD ["python", "/srv/app/deploy/docker/probe.py", "ready"]

# deploy/docker/entrypoint.py runs the doors (the nginx front on 8080-8082, the gRPC gateway on 7070/7071:
# bounded bodies, early 413/503/RESOURCE_EXHAUSTED; service/doors/front.py, service/doors/gateway,
# service/doors/budget.py) before TorchServe on loopback (deploy/docker/config.properties), and exits 1 when
# any of them dies, 0 after a requested stop.
# tini: PID 1, reaps zombies; -g and -e 143 keep a SIGTERM'd stop a clean exit.
# MALLOC_ARENA_MAX=2: glibc keeps fewer per-thread heaps (the frontend's direct buffers are malloc'ed).
ENTRYPOINT ["tini", "-g", "-e", "143", "--"]
CMD ["python", "/srv/app/deploy/docker/entrypoint.py"]
