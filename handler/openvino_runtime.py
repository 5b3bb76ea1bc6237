"""OpenVINO (CPU plugin) over the archive's model.onnx.

The precision is always set explicitly: without INFERENCE_PRECISION_HINT OpenVINO silently runs
bf16 on CPUs with AVX512-BF16 or AMX (logits off by up to 0.02; docs/PERFORMANCE.md). What the
compiled model reports is what the answers name, so a bf16 archive moved to a CPU without bf16
says it runs f32.

The thread count is fixed per compiled model, so there is one per count the worker can run on
(handler/cores.py), compiled on first use (the warm-up compiles them all). Threads are not pinned
to cores: the workers of one model would all pin theirs to the same first cores. An infer request
serves one call at a time, so each calling thread has its own (a worker calls from one thread; the
benchmark's in-process limit from several).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import openvino
import torch

from handler.model_card import ONNX_FILE, Provenance

# The archive's precision to OpenVINO's hint, and what OpenVINO reports back to ours.
HINTS = {"fp32": "f32", "bf16": "bf16"}
REPORTED = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


class OpenVinoModel:
    runtime = "openvino"

    def __init__(self, model_dir: Path, provenance: Provenance) -> None:
        if provenance.served_precision not in HINTS:
            raise ValueError(f"OpenVINO archives run fp32 or bf16, not {provenance.served_precision}")
        self.hint = HINTS[provenance.served_precision]
        self.core = openvino.Core()
        self.graph = self.core.read_model(str(Path(model_dir) / ONNX_FILE))
        self.compiled: dict[int, openvino.CompiledModel] = {}
        self.local = threading.local()
        compiled = self.compiled_for(torch.get_num_threads())
        reported = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16"
        self.precision = REPORTED.get(reported, reported)
        self.version = openvino.__version__

    def compiled_for(self, threads: int) -> openvino.CompiledModel:
        if threads not in self.compiled:
            self.compiled[threads] = self.core.compile_model(
                self.graph,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": self.hint,
                    "INFERENCE_NUM_THREADS": threads,
                    "PERFORMANCE_HINT": "LATENCY",
                    "NUM_STREAMS": 1,
                    "ENABLE_CPU_PINNING": False,
                },
            )
        return self.compiled[threads]

    def request(self, threads: int) -> openvino.InferRequest:
        requests = self.local.__dict__.setdefault("requests", {})
        if threads not in requests:
            requests[threads] = self.compiled_for(threads).create_infer_request()
        return requests[threads]

    def __call__(self, inputs: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        request = self.request(threads or torch.get_num_threads())
        batch = np.ascontiguousarray(inputs.detach().numpy(), dtype=np.float32)
        request.infer({0: batch})
        # The output buffer belongs to the request and is reused by its next call: copy it.
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
