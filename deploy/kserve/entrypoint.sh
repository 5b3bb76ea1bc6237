#!/bin/sh
# Start TorchServe with the runtime's arguments (torchserve --start ... returns at once), then
# KServe's model server in the foreground: it waits for the model's workers to be READY.
set -e
"$@"
exec python /srv/kserve_wrapper/__main__.py
