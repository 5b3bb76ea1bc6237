#!/usr/bin/env python3
"""The image's main process (Dockerfile CMD): the nginx front on the public inference port before
TorchServe, supervised so that the container exits non-zero when either dies (service/supervisor.py).

  FRONT_LISTEN     where the front listens (default 0.0.0.0:8080, the inference port clients use)
  TS_CONFIG_FILE   TorchServe's config; its inference_address is the front's upstream
  FRONT_RUN_DIR    the front's spool and PID file (default /srv/run/front)
  TS_LOG_CONFIG    TorchServe's log4j2 config (default /srv/app/config/log4j2.xml)
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from service.front import nginx_config  # noqa: E402
from service.properties import read_properties  # noqa: E402
from service.supervisor import Service, Supervisor  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = Path(os.environ.get("TS_CONFIG_FILE", "/srv/app/deploy/docker/config.properties"))
    upstream = read_properties(config)["inference_address"].split("://", 1)[-1]
    run_dir = Path(os.environ.get("FRONT_RUN_DIR", "/srv/run/front"))
    (run_dir / "body").mkdir(parents=True, exist_ok=True)
    front_config = run_dir / "nginx.conf"
    front_config.write_text(nginx_config(os.environ.get("FRONT_LISTEN", "0.0.0.0:8080"), upstream, run_dir))
    log_config = os.environ.get("TS_LOG_CONFIG", "/srv/app/config/log4j2.xml")
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") or "nginx"
    beside = Path(sys.executable).with_name("torchserve")  # the venv's, also when it is not on PATH
    torchserve = str(beside) if beside.is_file() else "torchserve"
    services = [
        Service("front (nginx)", [nginx, "-c", str(front_config), "-e", "stderr"]),
        Service(
            "TorchServe",
            [torchserve, "--foreground", "--ncs", "--ts-config", str(config), "--log-config", log_config],
            watch_names=("java",),
        ),
    ]
    return Supervisor(services).run()


if __name__ == "__main__":
    sys.exit(main())
