"""The service's memory budget: the one place that says how much memory the worst legal traffic needs.

Every figure is a measurement (docs/RELIABILITY.md, "Memory budget", says how each was taken) or
a limit the service enforces. The front (service/doors/front.py: nginx in the container) bounds how many
request bodies reach TorchServe at once, by size class, so the frontend's direct memory, its
queue and the bodies in the workers are bounded by design, whatever the burst; the JVM flags
keep the frontend inside its share; the pod's memory limit is the total with a margin.
tests/test_memory_budget.py checks that config.properties, the container's config, the
Kubernetes and KServe manifests and compose.yaml state these numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from handler.settings import DEFAULTS

MiB = 2**20

# A READY worker's memory by the runtime its archive names (MiB). TorchScript: PSS measured after
# 20 requests (437-446; torch from PyPI with its CUDA libraries mapped, no torchvision imported; the
# CPU-torch serving image's workers measure 322-323, `make container-test`: 450 still covers the
# TORCH_VARIANT=pypi image, and 330 would leave the pod at 3 GiB all the same).
# The others: private memory (USS) measured on warmed workers (ONNX Runtime 589: it keeps one
# session per thread count; OpenVINO fp32 620, bf16 509) plus 60 MiB for their share of the
# libraries (PSS - USS was 31-40 MiB for TorchScript). int8 archives run on TorchScript.
WORKER_MIB = {"torchscript": 450, "onnxruntime": 650, "openvino": 680, "openvino-bf16": 570}
DEFAULT_RUNTIME = "torchscript"


@dataclass(frozen=True)
class BodyClass:
    """Requests whose body is at most `max_bytes` (Content-Length); `connections` of them at a time
    reach TorchServe, the rest get an immediate 503 from the front. `receiving` of them at a time are
    read and spooled to disk by each door (None: as many as the front takes connections); more are
    refused before their body is read, so a burst cannot fill the run directory's disk."""

    name: str
    max_bytes: int
    connections: int
    receiving: int | None = None


@dataclass(frozen=True)
class MemoryBudget:
    workers: int = 2  # one per core; the manifests give a pod 2 cores
    runtime: str = DEFAULT_RUNTIME  # the image's archive (make run's default)

    @property
    def worker_mib(self) -> int:
        return WORKER_MIB[self.runtime]

    # Decoding one picture at the pixel limit: the decoded frame plus the reduced copy (a palette
    # picture is expanded to RGBA first): 5 bytes a pixel at most (handler/images.py, _reduced).
    decode_bytes_per_pixel: int = 5
    max_pixels: int = DEFAULTS.max_pixels
    # A body arrives in a worker as bytes TorchServe's protocol read, the request dict's copy and
    # the decoded base64 or multipart part: three copies at most.
    body_copies_in_worker: int = 3
    max_image_bytes: int = DEFAULTS.max_image_bytes
    envelope_mib: int = 2  # JSON or multipart around a base64 image at the limit
    jvm_heap_mib: int = 256
    jvm_direct_mib: int = 256
    # Measured: the frontend's RSS beyond heap and direct memory (metaspace, code, threads, GC).
    jvm_overhead_mib: int = 160
    front_connections: int = 256  # nginx: requests being received at once; more get 503 at once
    # The gRPC gateway (service/doors/gateway) spools messages to disk and admits them by the same size classes
    # as the front (more get RESOURCE_EXHAUSTED at once); an admitted message is in memory twice (read from
    # the spool, parsed) while it is sent on as an HTTP body, inside the front's classes. Measured: 62 MiB
    # RSS at rest, 145 MiB at the peak of 48 calls of 41 MiB (tests/test_doors.py's burst).
    gateway_copies: int = 2
    gateway_base_mib: int = 64
    # Bodies of the management and metrics ports (HTTP and gRPC): their APIs take parameters, not images.
    control_body_bytes: int = 1 * MiB
    # A client that has not sent its whole request header in this time is dropped (nginx
    # client_header_timeout); one that stops sending its body for this long too (client_body_timeout).
    slow_client_s: int = 10
    front_buffer_kib: int = 128  # a body larger than this is spooled to disk, not memory
    front_base_mib: int = 16
    margin: float = 0.15

    @property
    def max_request_bytes(self) -> int:
        """The largest body or message any door takes (config.properties' max_request_size too): an image
        at max_image_bytes base64-encoded (4/3), in whole MiB, with room for its envelope."""
        return (math.ceil(self.max_image_bytes * 4 / 3 / MiB) + self.envelope_mib) * MiB

    @property
    def body_classes(self) -> tuple[BodyClass, ...]:
        """Small photos flow freely; large bodies are admitted one or two at a time."""
        return (
            BodyClass("small", 999_999, 32),
            BodyClass("medium", 9_999_999, 2, receiving=8),
            BodyClass("large", self.max_request_bytes, 1, receiving=4),
        )

    def receiving(self, body_class: BodyClass) -> int:
        return body_class.receiving or self.front_connections

    @property
    def spool_mib(self) -> float:
        """The disk both doors' spools can fill at once (the front's HTTP bodies, the gateway's gRPC
        messages): the run directory's volume must hold it, with the logs."""
        per_door = sum(c.max_bytes * self.receiving(c) for c in self.body_classes) / MiB
        return 2 * per_door

    @property
    def http_bodies_mib(self) -> float:
        """HTTP bodies the front lets into TorchServe at once, at their classes' largest."""
        return sum(c.max_bytes * c.connections for c in self.body_classes) / MiB

    @property
    def gateway_mib(self) -> float:
        return self.gateway_base_mib + self.gateway_copies * self.http_bodies_mib

    def rows(self) -> list[tuple[str, float, str]]:
        """(part, MiB, how it is bounded) for the worst legal traffic."""
        in_flight = self.http_bodies_mib
        decode = self.decode_bytes_per_pixel * self.max_pixels / MiB
        return [
            ("workers at rest", self.workers * self.worker_mib,
             f"{self.workers} x {self.worker_mib} MiB ({self.runtime} worker)"),
            ("decoding", self.workers * decode, f"one picture at {self.max_pixels / 1e6:g} MP per worker"),
            ("bodies in the workers", in_flight * self.body_copies_in_worker,
             f"{in_flight:.0f} MiB admitted by the front (HTTP and gRPC alike) x {self.body_copies_in_worker} copies"),
            ("frontend (JVM)", self.jvm_heap_mib + self.jvm_direct_mib + self.jvm_overhead_mib,
             f"-Xmx{self.jvm_heap_mib}m, direct {self.jvm_direct_mib}m, {self.jvm_overhead_mib} MiB besides"),
            ("gRPC gateway", self.gateway_mib,
             f"{self.http_bodies_mib:.0f} MiB admitted by size class x {self.gateway_copies} copies, "
             f"{self.gateway_base_mib} MiB besides"),
            ("front (nginx)", self.front_base_mib + self.front_connections * self.front_buffer_kib / 1024,
             f"{self.front_connections} connections x {self.front_buffer_kib} KiB buffer"),
        ]

    @property
    def worst_mib(self) -> float:
        return sum(mib for _, mib, _ in self.rows())

    @property
    def limit_mib(self) -> int:
        """The pod's memory, request and limit alike (Guaranteed QoS: the pod is the last to be evicted
        under node memory pressure): the worst case plus the margin, rounded up to whole GiB."""
        return int(math.ceil(self.worst_mib * (1 + self.margin) / 1024) * 1024)

    @property
    def vmargs(self) -> str:
        """The frontend's JVM flags (config.properties' vmargs): heap and direct memory capped, and an
        out-of-memory JVM exits (the container then exits non-zero and is restarted) instead of
        limping on with broken threads."""
        return (
            f"-Xmx{self.jvm_heap_mib}m -XX:MaxDirectMemorySize={self.jvm_direct_mib}m -XX:+ExitOnOutOfMemoryError "
            "-Dio.netty.allocator.numDirectArenas=2 -Dio.netty.allocator.numHeapArenas=2"
        )

    def kubernetes_quantity(self, mib: int) -> str:
        return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"

    def markdown(self) -> str:
        lines = ["| part | worst case (MiB) | bounded by |", "|---|---:|---|"]
        lines += [f"| {name} | {mib:.0f} | {why} |" for name, mib, why in self.rows()]
        lines.append(f"| **total** | **{self.worst_mib:.0f}** | pod memory (request = limit) {self.limit_mib} MiB, "
                     f"the total +{self.margin:.0%} rounded up to whole GiB |")
        return "\n".join(lines)


BUDGET = MemoryBudget()

if __name__ == "__main__":
    print(BUDGET.markdown())
    print()
    for runtime in WORKER_MIB:
        budget = MemoryBudget(runtime=runtime)
        print(f"- an archive on {runtime}: worst case {budget.worst_mib:.0f} MiB, pod memory {budget.limit_mib} MiB")
