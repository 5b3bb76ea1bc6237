"""A TorchServe handler that spends a fixed CPU time per image and answers: TorchServe's own cost
for work of the handler's size, with no cache or memory effects (service/bench/ceiling.py).
Packed alone into a benchmark archive; model-config.yaml's handler.cpu_ms_per_image sets the cost."""

from __future__ import annotations

import json
import time


def handle(data: list[dict] | None, context) -> list[str] | None:
    if data is None:  # TorchServe's load-time call
        return None
    per_image_s = float((context.model_yaml_config or {}).get("handler", {}).get("cpu_ms_per_image", 0)) / 1000
    end = time.thread_time() + per_image_s * len(data)
    while time.thread_time() < end:  # CPU time, so being preempted does not shorten the work
        pass
    return [json.dumps({"model": {"name": "fixed-cost"}, "predictions": []}) for _ in data]
