#!/bin/sh
# Podman and a local stand-in for the Dockerfile's base image (python:3.11-slim-bookworm),
# for `make container-test` on a machine that reaches Debian's mirror and PyPI but no image
# registry. Idempotent: each step is skipped when its result exists.
#   1. apt-get install podman runc debootstrap (as `make test-deps` installs chromium)
#   2. debootstrap --variant=minbase bookworm from the mirror this machine's apt uses,
#      imported as localhost/bookworm:min
#   3. deploy/podman/base.Containerfile on top, squashed to one layer (so the apt lists and
#      documentation it removes are gone, not hidden): localhost/python:3.11-slim-bookworm
# Env: PODMAN (the podman command with its global options), BASE_IMAGE (the result's name).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PODMAN=${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs}
ROOTFS_IMAGE=${ROOTFS_IMAGE:-localhost/bookworm:min}
BASE_IMAGE=${BASE_IMAGE:-localhost/python:3.11-slim-bookworm}
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi

if ! command -v podman > /dev/null || ! command -v runc > /dev/null || ! command -v debootstrap > /dev/null; then
    echo "installing Debian's podman, runc and debootstrap for the container test"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap
fi

# The revision base.Containerfile labels its image with: an older stand-in is rebuilt.
REVISION=$(sed -n 's/^LABEL org.example.stand-in-revision="\(.*\)"$/\1/p' "$HERE/base.Containerfile")
if $PODMAN image exists "$BASE_IMAGE" && [ "$($PODMAN image inspect --format \
        '{{index .Labels "org.example.stand-in-revision"}}' "$BASE_IMAGE")" = "$REVISION" ]; then
    echo "stand-in base $BASE_IMAGE (revision $REVISION) exists"
    exit 0
fi

if ! $PODMAN image exists "$ROOTFS_IMAGE"; then
    # The mirror this machine's apt already uses (never written down in the repository).
    mirror=$(apt-cache policy | awk '$1 ~ /^[0-9]+$/ && $3 ~ /^bookworm\// {print $2; exit}')
    [ -n "$mirror" ] || { echo "no bookworm mirror in this machine's apt sources" >&2; exit 1; }
    work=$(mktemp -d)
    trap '$SUDO rm -rf "$work"' EXIT
    echo "debootstrap bookworm (minbase) from $mirror"
    $SUDO debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    $SUDO tar -C "$work/rootfs" -c . | $PODMAN import - "$ROOTFS_IMAGE"
fi

echo "building the stand-in base $BASE_IMAGE"
# Debian's packages come over the mirror apt names; no pip, so no build-time mounts.
$PODMAN build --squash-all --network host --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    --build-arg ROOTFS_IMAGE="$ROOTFS_IMAGE" -t "$BASE_IMAGE" -f "$HERE/base.Containerfile" "$HERE"
