"""The handler's settings: one typed value, every default written once.

The archive's model-config.yaml may override any of them in its `handler:` section, which
names only what it changes, so these defaults are what is served unless it does; the UI, the
benchmark and the tests read the defaults from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

THREAD_RULES = ("shared", "auto")


@dataclass(frozen=True)
class HandlerSettings:
    # Answers per request unless the request asks for another top-k.
    topk: int = 3
    # Images over this many pixels are refused from their header, before decoding.
    max_pixels: int = 50_000_000
    # Images over this many bytes (after base64 decoding) get a 413 that names the limit (30 MiB).
    max_image_bytes: int = 30 * 2**20
    # Images one request may carry (KServe v1 instances, v2 elements, multipart files); more get a 413.
    # Also the most images one forward pass takes, which bounds the worker's memory.
    max_images_per_request: int = 32
    # "shared": the workers share the cores batch by batch (handler/cores.py): a lone request runs
    # on every core, busy workers get one each, never more threads than cores in all; fewer while
    # another program keeps cores busy (its threads would wait at every op). "auto": a fixed
    # cores // workers threads per worker; a number: that many per worker.
    intra_op_threads: str | int = "shared"
    # fp32: torch.jit.optimize_for_inference; int8: freeze. False serves the model as loaded.
    optimize: bool = True
    # Explanations (POST /explanations/{model}, handler/explain.py): the saliency grid's rows and
    # columns; occlusion hides a 2x2-cell patch at each of (grid - 1)^2 places, so one explanation
    # costs (grid - 1)^2 + 1 forward passes (8: 50).
    explain_grid: int = 8
    # Masked images per forward call (the last call is padded to the same size, so no new shape).
    explain_batch: int = 16
    # Images one batch may explain (also per request); more get a 503 (a request with more: 413).
    explain_per_batch: int = 1
    # The share of a worker's time explanations may take; beyond it they get a 503, so predictions
    # always keep the rest of the worker.
    explain_share: float = 0.25

    def __post_init__(self) -> None:
        """Refuse a wrong setting when the worker starts, in words that name it, rather than
        failing (or silently misbehaving) on the first request."""
        for name in ("topk", "max_pixels", "max_image_bytes", "max_images_per_request", "explain_grid",
                     "explain_batch", "explain_per_batch"):
            _set(self, name, _positive_int(name, getattr(self, name)))
        if not 2 <= self.explain_grid <= 32:
            raise ValueError(f"handler setting explain_grid must be from 2 to 32, got {self.explain_grid}")
        share = self.explain_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise ValueError(f"handler setting explain_share must be a fraction in (0, 1], got {share!r}")
        if self.intra_op_threads is None:  # an empty `intra_op_threads:` in the YAML
            _set(self, "intra_op_threads", "auto")
        if self.intra_op_threads not in THREAD_RULES:
            number = _positive_int("intra_op_threads", self.intra_op_threads, ' (or "shared" or "auto")')
            _set(self, "intra_op_threads", number)
        if not isinstance(self.optimize, bool):
            raise ValueError(f"handler setting optimize must be true or false, got {self.optimize!r}")

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


def _positive_int(name: str, value: object, alternatives: str = "") -> int:
    """A whole number >= 1; YAML may give it as text ("4")."""
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise ValueError(f"handler setting {name} must be a whole number >= 1{alternatives}, got {value!r}")
    return number


def _set(settings: HandlerSettings, name: str, value: object) -> None:
    object.__setattr__(settings, name, value)  # normalising in __post_init__ of a frozen dataclass


DEFAULTS = HandlerSettings()
