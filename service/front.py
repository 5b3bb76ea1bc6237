"""The front: nginx before TorchServe's inference port, so a burst of large uploads is answered, not fatal.

TorchServe's frontend reads a whole request body into memory before it looks at anything (even the
key), and has no bound on how many it reads at once: 24 uploads of 41 MiB in a 2 GiB pod
exhausted its direct memory (connection resets) and then got it OOM-killed. nginx spools bodies
over a small buffer to disk, answers a body over the limit with 413 before reading it, and passes
on at most a few bodies of each size class at a time (service/memory_budget.py); the rest get an
immediate 503 with Retry-After. Every refusal is JSON in TorchServe's error shape.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from service.memory_budget import BUDGET, MemoryBudget
from service.processes import Started, stop_group

NGINX = "nginx"


def _json(status: int, kind: str, message: str) -> str:
    """An nginx `return` of a JSON body, quoted for nginx's config syntax."""
    body = json.dumps({"code": status, "type": kind, "message": message})
    return "'" + body.replace("\\", "\\\\").replace("'", "\\'") + "\\n'"


def _size_map(budget: MemoryBudget) -> str:
    """Content-Length to body class, by its number of digits (nginx maps match text); a body
    without a length (chunked) counts as large."""
    lines = []
    for body_class in budget.body_classes[:-1]:
        digits = len(str(body_class.max_bytes))
        assert body_class.max_bytes == 10**digits - 1, "size classes end at 9...9 bytes"
        lines.append(f'    "~^[0-9]{{1,{digits}}}$" {body_class.name};')
    lines.append(f"    default {budget.body_classes[-1].name};")
    return "\n".join(lines)


def _server_block(listen: str, budget: MemoryBudget) -> str:
    """The one server: everything to the body class's upstream; refusals as TorchServe-shaped JSON."""
    too_large = _json(413, "RequestTooLarge", f"the request body is over {budget.max_request_bytes} bytes "
                      f"({budget.max_request_bytes / 2**20:g} MiB); send a smaller image")
    busy = _json(503, "ServiceUnavailable", "the server is busy with other uploads of this size; retry shortly")
    return f"""  server {{
    listen {listen};
    limit_conn front {budget.front_connections};
    limit_conn_status 503;
    location / {{
      proxy_pass http://$body_class;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_request_buffering on;
      proxy_read_timeout 120s;
      proxy_next_upstream off;
      error_page 413 = @too_large;
      error_page 502 503 504 = @busy;
    }}
    location @too_large {{
      default_type application/json;
      return 413 {too_large};
    }}
    location @busy {{
      default_type application/json;
      add_header Retry-After 1 always;
      return 503 {busy};
    }}
  }}
"""


def nginx_config(listen: str, upstream: str, run_dir: Path, budget: MemoryBudget = BUDGET) -> str:
    """nginx.conf for a front listening on `listen` (host:port) before TorchServe's inference address
    `upstream` (host:port), keeping its files in `run_dir`."""
    run_dir = Path(run_dir)
    upstreams = "\n".join(
        f"  upstream {c.name} {{ zone {c.name} 64k; server {upstream} max_conns={c.connections}; }}"
        for c in budget.body_classes
    )
    # Started as root (CI, tests), nginx would run its worker as "nobody", which cannot write the
    # body spool in a private run directory; in the container it runs as the image's user.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""# Rendered by service/front.py from service/memory_budget.py; do not edit.
{user}worker_processes 1;
daemon off;
pid {run_dir / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections {budget.front_connections + 64}; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {run_dir / "body"};
  proxy_temp_path {run_dir / "proxy"};
  fastcgi_temp_path {run_dir / "fastcgi"};
  uwsgi_temp_path {run_dir / "uwsgi"};
  scgi_temp_path {run_dir / "scgi"};
  client_max_body_size {budget.max_request_bytes};
  client_body_buffer_size {budget.front_buffer_kib}k;
  client_body_timeout 30s;
  limit_conn_zone $server_name zone=front:1m;
  map $content_length $body_class {{
{_size_map(budget)}
  }}
{upstreams}
{_server_block(listen, budget)}}}
"""


class Front(Started):
    """One nginx front, as a process of its own session (stopped with its group)."""

    def __init__(self, listen: str, upstream: str, run_dir: Path, budget: MemoryBudget = BUDGET) -> None:
        self.listen, self.upstream, self.run_dir, self.budget = listen, upstream, Path(run_dir), budget
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def config_file(self) -> Path:
        return self.run_dir / "nginx.conf"

    def start(self, log_file: Path | None = None) -> subprocess.Popen:
        binary = shutil.which(NGINX) or shutil.which(NGINX, path="/usr/sbin:/sbin")
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx; make test-deps does it)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "body").mkdir(exist_ok=True)
        self.config_file.write_text(nginx_config(self.listen, self.upstream, self.run_dir, self.budget))
        output = open(log_file, "ab") if log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config_file), "-e", "stderr"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self.process

    def wait_ready(self, timeout: float = 10) -> None:
        """Until nginx answers (any status: TorchServe behind it may still be starting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}")
            try:
                requests.get(f"{self.url}/ping", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"nginx did not answer on {self.listen} within {timeout:.0f} s")

    def stop(self, timeout: float = 10) -> None:
        if self.process is not None:
            stop_group(self.process.pid, timeout)
            self.process.wait()

