"""TorchServe behind its doors: the service as `make run` and the image run it.

TorchServe listens on loopback ports only (its config.properties). Clients reach it through the doors
on the public ports: the front (nginx, service/doors/front.py) for HTTP, the gateway (service/doors/gateway) for
gRPC and OIP metadata, so every door is bounded the same way locally as in the container. The public
addresses are written to the run directory (doors.json), where clients that find a server by its run
directory (scripts/manage.py, the UI launch) read them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc

from service.client.api import Endpoints, TorchServeClient
from service.doors.front import Doors, Front
from service.local.torchserve import TorchServe, free_ports
from service.names import DOORS_FILE_NAME, OIP_METADATA_PORT, PUBLIC_PORTS, ROOT
from service.processes import Started, stop_recorded, write_pid
from service.properties import read_properties


def endpoints_of(doors: Doors) -> Endpoints:
    """The HTTP doors as a client's Endpoints."""
    return Endpoints(doors.url("inference"), doors.url("management"), doors.url("metrics"))


def gateway_command(config: Path, host: str, ports: dict[str, int], oip_port: int, key_file: Path,
                    spool_dir: Path) -> list[str]:
    """The gateway process (service/doors/gateway) for the TorchServe configured by `config`."""
    return [sys.executable, "-m", "service.doors.gateway", "--config", str(config), "--host", host,
            "--ports", json.dumps(ports), "--oip-port", str(oip_port), "--key-file", str(key_file),
            "--spool-dir", str(spool_dir)]


FRONT_PID_FILE, GATEWAY_PID_FILE = "front.pid", "gateway.pid"


class FrontedTorchServe(Started):
    """`server` behind the front and the gateway on `host` at `ports` (door name -> port)."""

    def __init__(self, server: TorchServe, host: str = "127.0.0.1", ports: dict[str, int] | None = None,
                 oip_port: int = OIP_METADATA_PORT) -> None:
        self.server, self.host, self.ports, self.oip_port = server, host, ports or PUBLIC_PORTS, oip_port
        self.front: Front | None = None
        self.gateway: subprocess.Popen | None = None

    @classmethod
    def on_free_ports(cls, run_dir: Path, model_store: Path, **overrides: str) -> FrontedTorchServe:
        ports = free_ports(5 + len(PUBLIC_PORTS) + 1)
        server = TorchServe.on_free_ports(Path(run_dir) / "torchserve", model_store, ports[:5], **overrides)
        return cls(server, ports=dict(zip(PUBLIC_PORTS, ports[5:-1], strict=True)), oip_port=ports[-1])

    @property
    def doors(self) -> Doors:
        assert self.front is not None, "not started"
        return self.front.doors

    @property
    def doors_file(self) -> Path:
        return self.server.run_dir / DOORS_FILE_NAME

    @property
    def endpoints(self) -> Endpoints:
        return endpoints_of(self.doors)

    @property
    def key_file(self) -> Path:
        return self.server.key_file

    @property
    def log_dir(self) -> Path:
        return self.server.log_dir

    @property
    def process(self) -> subprocess.Popen | None:
        """TorchServe's launcher: the service lives as long as it does."""
        return self.server.process

    def client(self, timeout: float = 60) -> TorchServeClient:
        """A client that goes through the front, as every outside client does."""
        return TorchServeClient(endpoints_of(self.doors), key_file=self.server.key_file, timeout=timeout)

    def start(self) -> None:
        """TorchServe, then its doors; if a door cannot start, what did start is stopped again."""
        self.server.start()
        try:
            self.start_doors()
        except BaseException:
            self.stop()
            raise

    def start_doors(self) -> None:
        props = read_properties(self.server.config_file)
        doors = Doors.behind(props, self.host, self.ports, oip=f"127.0.0.1:{self.oip_port}")
        self.front = Front(doors, self.server.run_dir / "front")
        write_pid(self.server.run_dir, self.front.start(self.server.log_dir / "front.log").pid, FRONT_PID_FILE)
        command = gateway_command(self.server.config_file, self.host, self.ports, self.oip_port, self.server.key_file,
                                  self.server.run_dir / "gateway-spool")
        with open(self.server.log_dir / "gateway.log", "ab") as log:
            self.gateway = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        write_pid(self.server.run_dir, self.gateway.pid, GATEWAY_PID_FILE)
        self.doors_file.write_text(json.dumps(doors.public, indent=1) + "\n")

    def wait_ready(self, timeout: float = 180) -> list[str]:
        assert self.front is not None and self.gateway is not None
        self.front.wait_ready()
        models = self.server.wait_ready(timeout)
        address = self.doors.public["grpc_inference"].replace("0.0.0.0:", "127.0.0.1:")
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        if self.gateway.poll() is not None:
            raise RuntimeError(f"the gRPC gateway exited with {self.gateway.returncode}; see {self.server.log_dir}")
        return models

    def stop(self) -> None:
        """Everything this or an earlier command started from the run directory (`make stop`)."""
        self.doors_file.unlink(missing_ok=True)
        run_dir = self.server.run_dir
        stop_recorded(run_dir, GATEWAY_PID_FILE, self.gateway, 10)
        stop_recorded(run_dir, FRONT_PID_FILE, self.front.process if self.front else None, 10)
        self.server.stop()

    def warm_up(self, models: list[str]) -> dict[str, dict]:
        return self.server.warm_up(models)

    def alive(self) -> bool:
        """TorchServe, the front and the gateway all still run."""
        processes = [self.server.process, self.gateway, self.front.process if self.front else None]
        return all(p is not None and p.poll() is None for p in processes)

