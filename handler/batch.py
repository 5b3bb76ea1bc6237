"""One TorchServe batch on its way through the handler's stages.

Its own module because TorchServe wants exactly one class in the handler's entry file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from handler.errors import Result
from handler.request import ParsedRequest


class Accepted(NamedTuple):
    """A request with at least one decoded image: per image, its row in the batch's model input,
    or the error that image alone caused."""

    index: int  # in TorchServe's batch
    parsed: ParsedRequest
    rows: tuple[Result[int], ...]


@dataclass
class Batch:
    """Each request's answer once known, and the accepted requests' images waiting for the model.

    preprocess answers describe requests and refused ones at once; every decoded image of the
    accepted ones (several per request, possibly) waits for the forward pass, then postprocess
    gives each request its own answer."""

    answers: list[str | None]
    accepted: list[Accepted] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)  # the model's rows, in order
    topk: list[int] = field(default_factory=list)  # each row's top-k: its request's
    described: int = 0
    explain: dict[int, int | None] = field(default_factory=dict)  # request index -> class (None: top)

    @classmethod
    def of_size(cls, n: int) -> Batch:
        return cls(answers=[None] * n)

    def accept(self, index: int, parsed: ParsedRequest, images: Sequence[Result[torch.Tensor]]) -> None:
        """A request's decoded images become rows of the model input; its failed ones keep their error."""

        def row(tensor: torch.Tensor) -> int:
            self.inputs.append(tensor)
            self.topk.append(parsed.topk)
            return len(self.inputs) - 1

        self.accepted.append(Accepted(index, parsed, tuple(image.then(row) for image in images)))

    def stacked_inputs(self) -> torch.Tensor:
        return torch.stack(self.inputs)

    @property
    def refused(self) -> int:
        return len(self.answers) - len(self.accepted) - self.described

    def replies(self) -> list[str]:
        """Every request's answer, in order; TorchServe fails the whole batch on a missing one."""
        if any(answer is None for answer in self.answers):
            raise RuntimeError("a request of the batch was left without an answer")
        return [answer for answer in self.answers if answer is not None]
