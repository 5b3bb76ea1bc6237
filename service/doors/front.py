"""The front: nginx before TorchServe's HTTP ports, so a burst of large bodies through any door is answered.

TorchServe's frontend reads a whole request (an HTTP body or a gRPC message) into memory before it
looks at anything, and has no bound on how many it reads at once: 24 HTTP uploads of 41 MiB in a
2 GiB pod exhausted its direct memory, and 48 gRPC calls of 41 MiB with a valid key killed the JVM.
So no client reaches TorchServe directly: it listens on loopback only, and the public ports are doors
(`Doors`): the HTTP ones here, the gRPC ones in service/doors/gateway (which calls these HTTP doors).
- inference: bodies spooled over a small buffer to disk, a body over the limit answered 413 before it
  is read, at most a few bodies of each size class passed on at a time (service/doors/budget.py);
- management and metrics: bodies of at most `control_body_bytes`.
Every refusal is immediate JSON in TorchServe's error shape. A client that sends its request too slowly
is dropped after `slow_client_s`. The Open Inference Protocol's model metadata and readiness, which
TorchServe does not serve, go to service/doors/oip.py's server when one is given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from service.doors.budget import BUDGET, MemoryBudget
from service.names import PUBLIC_PORTS
from service.processes import Started, stop_group, wait_until

NGINX = "nginx"


@dataclass(frozen=True)
class Doors:
    """Where clients connect (`public`) and where TorchServe listens behind each door, as host:port, by
    door name (service/names.py's PUBLIC_PORTS); `oip` is the OIP metadata server's host:port, if any."""

    public: dict[str, str]
    torchserve: dict[str, str]
    oip: str | None = None

    @classmethod
    def behind(cls, props: dict[str, str], host: str, ports: dict[str, int] | None = None,
               oip: str | None = None) -> Doors:
        """The doors before the TorchServe whose config.properties is `props`, on `host` (0.0.0.0 in the
        image, 127.0.0.1 locally) at `ports` (the public defaults)."""
        ports = ports or PUBLIC_PORTS
        inner = {
            "inference": _host_port(props["inference_address"]),
            "management": _host_port(props["management_address"]),
            "metrics": _host_port(props["metrics_address"]),
            "grpc_inference": f"{props.get('grpc_inference_address', '127.0.0.1')}:{props['grpc_inference_port']}",
            "grpc_management": f"{props.get('grpc_management_address', '127.0.0.1')}:{props['grpc_management_port']}",
        }
        return cls({door: f"{host}:{ports[door]}" for door in inner}, inner, oip)

    def url(self, door: str) -> str:
        """A client's URL of an HTTP door (0.0.0.0 reached as 127.0.0.1)."""
        return "http://" + self.public[door].replace("0.0.0.0:", "127.0.0.1:")


def _host_port(address: str) -> str:
    return address.split("://", 1)[-1].rstrip("/")


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


def _http_refusals(max_bytes: int) -> str:
    too_large = _json(413, "RequestTooLarge", f"the request body is over {max_bytes} bytes "
                      f"({max_bytes / 2**20:g} MiB); send a smaller one")
    busy = _json(503, "ServiceUnavailable", "the server is busy with other uploads of this size; retry shortly")
    return f"""    location @too_large {{
      default_type application/json;
      return 413 {too_large};
    }}
    location @busy {{
      default_type application/json;
      add_header Retry-After 1 always;
      return 503 {busy};
    }}
"""


def _proxy(target: str) -> str:
    return f"""      proxy_pass http://{target};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_request_buffering on;
      proxy_read_timeout 120s;
      proxy_next_upstream off;
      error_page 413 = @too_large;
      error_page 502 503 504 = @busy;"""


def _receiving_maps(budget: MemoryBudget) -> str:
    """A limit_conn key per body class that bounds how many bodies are received at once: the class's
    name for a request whose Content-Length is in that class (a chunked body counts as the largest),
    empty (not counted) for any other. Checked before the body is read."""
    classes, lines, low = budget.body_classes, [], 1
    for i, body_class in enumerate(classes):
        digits = len(str(body_class.max_bytes))
        last = i == len(classes) - 1
        if body_class.receiving is not None:
            pattern = f"~^[0-9]{{{low},}}:" if last else f"~^[0-9]{{{low},{digits}}}:"
            chunked = f'\n    "~^:.*chunked" {body_class.name};' if last else ""
            lines.append(f'  map "$content_length:$http_transfer_encoding" $receiving_{body_class.name} {{\n'
                         f'    "{pattern}" {body_class.name};{chunked}\n    default "";\n  }}\n'
                         f"  limit_conn_zone $receiving_{body_class.name} zone=receiving_{body_class.name}:1m;")
        low = digits + 1
    return "\n".join(lines)


def _receiving_limits(budget: MemoryBudget) -> str:
    return "".join(f"    limit_conn receiving_{c.name} {c.receiving};\n" for c in budget.body_classes if c.receiving)


def _inference_server(doors: Doors, budget: MemoryBudget) -> str:
    """Inference over HTTP: each body class to its upstream; OIP metadata and readiness to service/doors/oip.py."""
    oip = "" if doors.oip is None else f"""    location ~ "^/v2/models/[^/]+(/versions/[^/]+)?(/ready)?$" {{
      limit_except GET {{ deny all; }}
{_proxy("oip")}
    }}
"""
    return f"""  server {{
    listen {doors.public["inference"]};
    limit_conn front {budget.front_connections};
{_receiving_limits(budget)}    limit_conn_status 503;
    client_max_body_size {budget.max_request_bytes};
{oip}    location / {{
{_proxy("$body_class")}
    }}
{_http_refusals(budget.max_request_bytes)}  }}
"""


# The model API's register call is the one POST the management door passes, and only as TorchServe's
# register of an archive already in the model store: a bare file name as `url`, the parameters below, no
# body (TorchServe reads a JSON body's url instead). URLs, paths, encoded characters, a second `url`, a
# `handler`: refused here with 403, before TorchServe (which also needs the management key) sees them.
REGISTER_PARAMS = ("url", "model_name", "initial_workers", "synchronous", "batch_size", "max_batch_delay",
                   "response_timeout", "startup_timeout")
_PARAM = "(?:" + "|".join(REGISTER_PARAMS) + ")=[A-Za-z0-9._-]*"
REGISTRATION = (r"^POST /models\?(?=(?:[^ ]*&)?url=[A-Za-z0-9][A-Za-z0-9._-]*\.mar(?:&| ))(?![^ ]*url=[^ ]*&url=)"
                + _PARAM + "(?:&" + _PARAM + ")* 0?:$")


def _registration_map() -> str:
    """$registration_refused: 1 for any POST on the management door but a bare store-name registration."""
    return f"""  map "$request_method $request_uri $content_length:$http_transfer_encoding" $registration_refused {{
    "~{REGISTRATION}" 0;
    "~^POST " 1;
    default 0;
  }}"""


def _control_server(door: str, doors: Doors, budget: MemoryBudget) -> str:
    """Management and metrics over HTTP: small bodies only; on management, registrations by store name only."""
    refused = _json(403, "RegistrationRefused", "the management door registers only an archive already in the "
                    "model store, by its bare file name (POST /models?url=NAME.mar, no body): no URL, path or "
                    "other parameters (scripts/manage.py deploy copies an archive into the store first)")
    # In the location (after the body size check, so an oversized body still gets its 413 unread).
    check = f"""      default_type application/json;
      if ($registration_refused) {{
        return 403 {refused};
      }}
""" if door == "management" else ""
    return f"""  server {{
    listen {doors.public[door]};
    limit_conn front {budget.front_connections};
    limit_conn_status 503;
    client_max_body_size {budget.control_body_bytes};
    location / {{
{check}{_proxy(door)}
    }}
{_http_refusals(budget.control_body_bytes)}  }}
"""


def _upstreams(doors: Doors, budget: MemoryBudget) -> str:
    inference = doors.torchserve["inference"]
    lines = [f"  upstream {c.name} {{ zone {c.name} 64k; server {inference} max_conns={c.connections}; }}"
             for c in budget.body_classes]
    lines += [f"  upstream {door} {{ server {doors.torchserve[door]}; }}" for door in ("management", "metrics")]
    if doors.oip:
        lines.append(f"  upstream oip {{ server {doors.oip}; }}")
    return "\n".join(lines)


def nginx_config(doors: Doors, run_dir: Path, budget: MemoryBudget = BUDGET) -> str:
    """nginx.conf for the front at `doors`, keeping its files in `run_dir`."""
    run_dir = Path(run_dir)
    # Started as root (CI, tests), nginx would run its worker as "nobody", which cannot write the
    # body spool in a private run directory; in the container it runs as the image's user.
    user = "user root;\n" if os.geteuid() == 0 else ""
    servers = (_inference_server(doors, budget)
               + _control_server("management", doors, budget) + _control_server("metrics", doors, budget))
    return f"""# Rendered by service/doors/front.py from service/doors/budget.py; do not edit.
{user}worker_processes 1;
daemon off;
pid {run_dir / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections {2 * budget.front_connections + 64}; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {run_dir / "body"};
  proxy_temp_path {run_dir / "proxy"};
  fastcgi_temp_path {run_dir / "fastcgi"};
  uwsgi_temp_path {run_dir / "uwsgi"};
  scgi_temp_path {run_dir / "scgi"};
  client_body_buffer_size {budget.front_buffer_kib}k;
  client_header_timeout {budget.slow_client_s}s;
  client_body_timeout {budget.slow_client_s}s;
  send_timeout 60s;
  limit_conn_zone $server_name zone=front:1m;
  map $content_length $body_class {{
{_size_map(budget)}
  }}
{_receiving_maps(budget)}
{_registration_map()}
{_upstreams(doors, budget)}
{servers}}}
"""


class Front(Started):
    """One nginx front, as a process of its own session (stopped with its group)."""

    def __init__(self, doors: Doors, run_dir: Path, budget: MemoryBudget = BUDGET) -> None:
        self.doors, self.run_dir, self.budget = doors, Path(run_dir), budget
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The inference door's URL."""
        return self.doors.url("inference")

    @property
    def config_file(self) -> Path:
        return self.run_dir / "nginx.conf"

    def start(self, log_file: Path | None = None) -> subprocess.Popen:
        binary = shutil.which(NGINX) or shutil.which(NGINX, path="/usr/sbin:/sbin")
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx; make run-deps does it)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "body").mkdir(exist_ok=True)
        self.config_file.write_text(nginx_config(self.doors, self.run_dir, self.budget))
        output = open(log_file, "ab") if log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config_file), "-e", "stderr"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self.process

    def wait_ready(self, timeout: float = 10) -> None:
        """Until nginx answers (any status: TorchServe behind it may still be starting)."""
        wait_until(lambda: requests.get(f"{self.url}/ping", timeout=1), timeout,
                   f"nginx on {self.doors.public['inference']}", self.process, 0.1)

    def stop(self, timeout: float = 10) -> None:
        if self.process is not None:
            stop_group(self.process.pid, timeout)
            self.process.wait()
