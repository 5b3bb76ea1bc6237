"""The gateway process: the gRPC doors and the OIP metadata server, before the front's HTTP doors.

  python -m service.doors.gateway --config TS_CONFIG --front-host 127.0.0.1 [--host 0.0.0.0] [--key-file F]

Ports are service/names.py's public ones unless --ports gives a JSON of door -> port; TorchServe's own
addresses (for OIP metadata: its management API and token check) come from its config.properties.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from service.client.api import Endpoints, TorchServeClient
from service.doors.budget import BUDGET, MemoryBudget
from service.doors.gateway.h2_door import Door, SizeClass, serve
from service.doors.gateway.inference import InferenceApi
from service.doors.gateway.management import ManagementApi
from service.doors.gateway.open_inference import OpenInferenceApi
from service.doors.gateway.upstream import Upstream
from service.doors.oip import OipServer
from service.names import PUBLIC_PORTS
from service.properties import read_properties

log = logging.getLogger("gateway")
# Calls on the management door at once (health probes and operators; bodies of control_body_bytes at most).
MANAGEMENT_CALLS = 8


def local(address: str) -> str:
    return address.replace("://0.0.0.0:", "://127.0.0.1:").rstrip("/")


class Gateway:
    """Both gRPC doors and the OIP metadata server, for the TorchServe configured by `props`."""

    def __init__(self, props: dict[str, str], host: str, front_host: str, ports: dict[str, int], key_file: Path,
                 oip_port: int, spool_dir: Path, budget: MemoryBudget = BUDGET) -> None:
        self.host, self.ports = host, ports
        upstream = Upstream({door: f"http://{front_host}:{ports[door]}" for door in ("inference", "management")})
        inference_classes = tuple(SizeClass(c.max_bytes, c.connections, c.receiving) for c in budget.body_classes)
        common = {"spool_dir": spool_dir, "buffer_bytes": budget.front_buffer_kib * 1024,
                  "idle_s": budget.slow_client_s}
        self.doors = {
            "grpc_inference": Door({**InferenceApi(upstream).methods(), **OpenInferenceApi(upstream).methods()},
                                   budget.max_request_bytes, inference_classes, **common),
            "grpc_management": Door(ManagementApi(upstream).methods(), budget.control_body_bytes,
                                    (SizeClass(budget.control_body_bytes, MANAGEMENT_CALLS),), **common),
        }
        inner = Endpoints(local(props["inference_address"]), local(props["management_address"]),
                          local(props["metrics_address"]))
        tokens_checked = props.get("disable_token_authorization", "false").lower() != "true"
        self.oip = OipServer(("127.0.0.1", oip_port), TorchServeClient(inner, key_file=key_file, timeout=10),
                             inner.inference, tokens_checked)

    async def run(self, stopped: asyncio.Event) -> None:
        servers = [await serve(door, self.host, self.ports[name]) for name, door in self.doors.items()]
        self.oip.start()
        log.info("gRPC doors on %s, OIP metadata on %s", self.host, self.oip.host_port)
        await stopped.wait()
        for server in servers:
            server.close()
        self.oip.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="TorchServe's config.properties")
    p.add_argument("--host", default="127.0.0.1", help="where the gRPC doors listen")
    p.add_argument("--front-host", default="127.0.0.1", help="where the front's HTTP doors are reached")
    p.add_argument("--ports", type=json.loads, default={}, help="door -> port, over the public defaults")
    p.add_argument("--oip-port", type=int, required=True, help="the OIP metadata server's loopback port")
    p.add_argument("--key-file", type=Path, default=Path("key_file.json"))
    p.add_argument("--spool-dir", type=Path, default=Path("gateway-spool"), help="where messages are spooled")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gateway = Gateway(read_properties(args.config), args.host, args.front_host, {**PUBLIC_PORTS, **args.ports},
                      args.key_file, args.oip_port, args.spool_dir)

    async def run() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        await gateway.run(stopped)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
