"""The handler's settings: one typed value, every default written once.

The archive's model-config.yaml may override any of them in its `handler:` section; the UI,
the benchmark and the tests read the defaults from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class HandlerSettings:
    # Answers per request unless the request asks for another top-k.
    topk: int = 3
    # Images over this many pixels are refused from their header, before decoding.
    max_pixels: int = 50_000_000
    # Images over this many bytes (after base64 decoding) get a 413 that names the limit (30 MiB).
    max_image_bytes: int = 30 * 2**20
    # "shared": the workers share the cores batch by batch (handler/cores.py); "auto": a fixed
    # cores // workers threads per worker; a number: that many per worker.
    intra_op_threads: str | int = "shared"
    # fp32: torch.jit.optimize_for_inference; int8: freeze. False serves the model as loaded.
    optimize: bool = True

    @classmethod
    def from_yaml(cls, model_yaml: dict | None) -> HandlerSettings:
        """From the archive's model-config.yaml (TorchServe's context.model_yaml_config)."""
        section = dict((model_yaml or {}).get("handler") or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown handler settings in model-config.yaml: {', '.join(unknown)}")
        return cls(**section)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


DEFAULTS = HandlerSettings()
