"""Every port, path and name the project's commands agree on, written once.

config/config.properties states the same ports for TorchServe itself; tests check they agree.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Where things live in a checkout.
CONFIG = ROOT / "config" / "config.properties"
MODEL_CONFIG = ROOT / "config" / "model-config.yaml"
LOG_CONFIG = ROOT / "config" / "log4j2.xml"
# The metrics TorchServe exports: its own and the handler's (config.properties: metrics_config).
METRICS_CONFIG = ROOT / "config" / "metrics.yaml"
MODEL_STORE = ROOT / "model_store"
HANDLER_PACKAGE = ROOT / "handler"
UI_APP = ROOT / "ui" / "app.py"
# The UI with the operator page too (ui/operator_data.py: OPERATOR_ENV turns it on).
UI_OPERATOR_APP = ROOT / "ui" / "operator_app.py"
# A running server's files (`make run` / `make serve`): rendered config, key file, logs, PID file.
RUN_DIR = ROOT / "var"
KEY_FILE_NAME = "key_file.json"
DEFAULT_KEY_FILE = RUN_DIR / KEY_FILE_NAME
# Corrections collected by the UI (ui/feedback_store.py), in ImageFolder layout for `make finetune DATA=...`.
FEEDBACK_DIR = RUN_DIR / "feedback"

# Inside the image (Dockerfile): the checkout, TorchServe's config and the run volume with its key file.
IMAGE_ROOT = Path("/srv/app")
IMAGE_CONFIG = IMAGE_ROOT / "deploy" / "docker" / "config.properties"
IMAGE_RUN_DIR = Path("/srv/run")
IMAGE_KEY_FILE = IMAGE_RUN_DIR / KEY_FILE_NAME

# The model `make run` builds and the clients call when told nothing else.
DEFAULT_MODEL = "resnet18"

# The ports clients use (`make run` on loopback, the image on every interface): the front's doors
# (service/doors/front.py), each before TorchServe's own listener on a loopback port of config.properties.
INFERENCE_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082
GRPC_INFERENCE_PORT = 7070
GRPC_MANAGEMENT_PORT = 7071
PUBLIC_PORTS = {
    "inference": INFERENCE_PORT,
    "management": MANAGEMENT_PORT,
    "metrics": METRICS_PORT,
    "grpc_inference": GRPC_INFERENCE_PORT,
    "grpc_management": GRPC_MANAGEMENT_PORT,
}
# The OIP metadata server (service/doors/oip.py) behind the front, on loopback beside TorchServe's own ports.
OIP_METADATA_PORT = 8076
# A running front's public addresses, written beside config.properties in its run directory.
DOORS_FILE_NAME = "doors.json"
INFERENCE_URL = f"http://127.0.0.1:{INFERENCE_PORT}"
MANAGEMENT_URL = f"http://127.0.0.1:{MANAGEMENT_PORT}"
METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}"
# The Streamlit page that `make run` / `make ui` start.
UI_PORT = 8501
