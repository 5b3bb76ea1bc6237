#!/usr/bin/env python3
"""The image's main process (Dockerfile CMD): TorchServe on loopback behind its doors, supervised so that
the container exits non-zero when any of them dies (service/container/supervisor.py).

The doors listen on every interface at the public ports (service/names.py): the nginx front for HTTP
(service/doors/front.py) and the gRPC gateway with the OIP metadata server (service/doors/gateway). Both are
bounded by service/doors/budget.py, so no client reaches TorchServe's own ports.

  TS_CONFIG_FILE   TorchServe's config; its addresses are what the doors stand before
  FRONT_HOST       where the doors listen (default 0.0.0.0)
  FRONT_PORTS      JSON of door -> port over the public ports, e.g. {"inference": 9080} (default none)
  OIP_PORT         the OIP metadata server's loopback port (default service/names.py's)
  FRONT_RUN_DIR    the doors' spools and PID file (default /srv/run/front)
  TS_LOG_CONFIG    TorchServe's log4j2 config (default /srv/app/config/log4j2.xml)
  TS_KEY_FILE      the key file TorchServe writes (the OIP metadata server reads the management key)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from service.container.supervisor import Service, Supervisor
from service.doors.front import Doors, nginx_config
from service.local.fronted import gateway_command
from service.names import IMAGE_CONFIG, IMAGE_KEY_FILE, IMAGE_ROOT, IMAGE_RUN_DIR, OIP_METADATA_PORT, PUBLIC_PORTS
from service.properties import read_properties


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = Path(os.environ.get("TS_CONFIG_FILE", IMAGE_CONFIG))
    host = os.environ.get("FRONT_HOST", "0.0.0.0")
    ports = {**PUBLIC_PORTS, **json.loads(os.environ.get("FRONT_PORTS") or "{}")}
    run_dir = Path(os.environ.get("FRONT_RUN_DIR", IMAGE_RUN_DIR / "front"))
    key_file = Path(os.environ.get("TS_KEY_FILE", IMAGE_KEY_FILE))
    (run_dir / "body").mkdir(parents=True, exist_ok=True)
    oip_port = int(os.environ.get("OIP_PORT") or OIP_METADATA_PORT)
    doors = Doors.behind(read_properties(config), host, ports, oip=f"127.0.0.1:{oip_port}")
    front_config = run_dir / "nginx.conf"
    front_config.write_text(nginx_config(doors, run_dir))
    log_config = os.environ.get("TS_LOG_CONFIG", IMAGE_ROOT / "config" / "log4j2.xml")
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") or "nginx"
    beside = Path(sys.executable).with_name("torchserve")  # the venv's, also when it is not on PATH
    torchserve = str(beside) if beside.is_file() else "torchserve"
    services = [
        Service("front (nginx)", [nginx, "-c", str(front_config), "-e", "stderr"]),
        Service("gRPC gateway", gateway_command(config, host, ports, oip_port, key_file, run_dir / "grpc")),
        Service(
            "TorchServe",
            [torchserve, "--foreground", "--ncs", "--ts-config", str(config), "--log-config", log_config],
            watch_names=("java",),
        ),
    ]
    return Supervisor(services).run()


if __name__ == "__main__":
    sys.exit(main())
