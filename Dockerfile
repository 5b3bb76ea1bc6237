# syntax=docker/dockerfile:1
# TorchServe + the ResNet-18 archive + the Streamlit UI in one image (docs/DEPLOY.md).
#
#   docker build -t image-classifier .                                  # official weights (downloaded at build)
#   docker build --build-arg TORCH_VARIANT=cpu -t image-classifier .    # CPU-only PyTorch wheels
#   docker build --build-arg WEIGHTS=random -t image-classifier:test .  # offline, meaningless answers
#   docker build --build-arg WEIGHTS=weights/resnet18-f37072fd.pth .    # a state dict in the build context
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8081:8081 -p 8082:8082 -p 7070:7070 image-classifier
#
# Ports (the doors before TorchServe, which listens on loopback only): 8080 inference, 8081 management,
# 8082 metrics (Prometheus, no token) through the nginx front; 7070 gRPC inference and OIP, 7071 gRPC
# management through the gRPC gateway. Each is bounded by service/doors/budget.py.
# Every step is the command `make setup` / `make archive` runs: pip install -r requirements.txt
# (the runtime half of requirements-dev.txt) and scripts/build_archive.py.

# The base: any image with python3.11 as `python` (pip, venv) on Debian bookworm, the release
# with OpenJDK 17 (trixie ships only 21). `make container-test` passes a local stand-in
# (deploy/podman/base.Containerfile) where no registry is reachable.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# TORCH_VARIANT=cpu installs torch/torchvision (versions from requirements.txt) from
# PyTorch's CPU-only wheel index; "default" takes PyPI's wheels (with CUDA on x86_64).
ARG TORCH_VARIANT=default
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# WEIGHTS as in `make archive WEIGHTS=...`: official (download), random, or a file path.
ARG WEIGHTS=official

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/srv/venv \
    PATH=/srv/venv/bin:$PATH \
    PYTHONPATH=/srv/app

# Versions come with the pinned base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini nginx \
    && rm -rf /var/lib/apt/lists/* \
    && java -version && nginx -v

WORKDIR /srv/app
COPY requirements.txt ./
RUN python -m venv "$VIRTUAL_ENV" \
    && if [ "$TORCH_VARIANT" = cpu ]; then \
         pip install --index-url "$TORCH_CPU_INDEX" \
           "$(grep -E '^torch==' requirements.txt)" "$(grep -E '^torchvision==' requirements.txt)"; \
       fi \
    && pip install -r requirements.txt

COPY . .
# The archive is built now, so the image serves offline. Same command as `make archive`.
# Plain POSIX sh (set -- for the arguments, no pipes): OCI-format builds (Podman's default)
# have no SHELL instruction and run every RUN under /bin/sh.
RUN case "$WEIGHTS" in \
      official|"") set -- ;; \
      random) set -- --random-weights ;; \
      *) set -- --weights "$WEIGHTS" ;; \
    esac \
    && TORCH_HOME=/tmp/torch-home python scripts/build_archive.py --force "$@" \
    && rm -rf /tmp/torch-home weights \
    && python -m service.client.grpc_api \
    && python -c "import compileall, sys; sys.exit(not compileall.compile_dir('/srv/app', quiet=1))"

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
# bounded bodies, early 413/503/RESOURCE_EXHAUSTED; service/doors/front.py, service/doors/gateway, service/doors/budget.py)
# before TorchServe on loopback (deploy/docker/config.properties), and exits 1 when any of them dies, 0
# after a requested stop.
# tini: PID 1, reaps zombies; -g and -e 143 keep a SIGTERM'd stop a clean exit.
# MALLOC_ARENA_MAX=2: glibc keeps fewer per-thread heaps (the frontend's direct buffers are malloc'ed).
ENTRYPOINT ["tini", "-g", "-e", "143", "--"]
CMD ["python", "/srv/app/deploy/docker/entrypoint.py"]
