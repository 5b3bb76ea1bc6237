"""ONNX Runtime (CPU) over the archive's model.onnx.

A session's intra-op thread count is fixed when it is created, while the worker's count changes
batch by batch (handler/cores.py: one thread while other workers are busy, every core for a lone
request). So there is one session per thread count, made on first use (the warm-up makes them
all); each holds its own copy of the weights (ResNet-18: about 45 MiB each, two on two cores).
Idle threads do not spin: a spinning pool burns the core another worker is about to use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import torch

from handler.model_card import ONNX_FILE, Provenance


class OnnxRuntimeModel:
    runtime = "onnxruntime"

    def __init__(self, model_dir: Path, provenance: Provenance) -> None:
        self.path = str(Path(model_dir) / ONNX_FILE)
        self.precision = provenance.served_precision
        self.sessions: dict[int, onnxruntime.InferenceSession] = {}
        self.input_name = self.session(torch.get_num_threads()).get_inputs()[0].name
        self.version = onnxruntime.__version__

    def session(self, threads: int) -> onnxruntime.InferenceSession:
        if threads not in self.sessions:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sessions[threads] = onnxruntime.InferenceSession(
                self.path, options, providers=["CPUExecutionProvider"]
            )
        return self.sessions[threads]

    def __call__(self, inputs: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        session = self.session(threads or torch.get_num_threads())
        batch = np.ascontiguousarray(inputs.detach().numpy(), dtype=np.float32)
        (logits,) = session.run(None, {self.input_name: batch})
        return torch.from_numpy(logits)
