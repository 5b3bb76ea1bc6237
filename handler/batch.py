"""One TorchServe batch on its way through the handler's stages.

Its own module because TorchServe wants exactly one class in the handler's entry file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from handler.request import ParsedRequest


@dataclass
class Batch:
    """Each request's answer once known, and the accepted requests waiting for the model.

    preprocess answers describe requests and refused ones at once; the accepted ones (batch
    index, parsed request, input tensor) wait for the one forward pass and postprocess."""

    answers: list[str | None]
    accepted: list[tuple[int, ParsedRequest, torch.Tensor]] = field(default_factory=list)
    described: int = 0

    @classmethod
    def of_size(cls, n: int) -> Batch:
        return cls(answers=[None] * n)

    def stacked_inputs(self) -> torch.Tensor:
        return torch.stack([tensor for _, _, tensor in self.accepted])

    @property
    def refused(self) -> int:
        return len(self.answers) - len(self.accepted) - self.described

    def replies(self) -> list[str]:
        """Every request's answer, in order; TorchServe fails the whole batch on a missing one."""
        if any(answer is None for answer in self.answers):
            raise RuntimeError("a request of the batch was left without an answer")
        return [answer for answer in self.answers if answer is not None]
