"""The one error type a request can cause, and the one shape of "a value, or the error instead"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


class RequestError(Exception):
    """What fails one request, and only that one: something wrong with it (4xx), a bound it meets
    (503: explanations busy, or a worker that cannot serve), or a failure while answering it (500).
    Its status, kind and message are the request's answer, as TorchServe-style JSON."""

    def __init__(self, message: str, status: int = 400, kind: str = "BadRequest") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind

    def to_json(self) -> dict[str, object]:
        return {"code": self.status, "type": self.kind, "message": self.message}


@dataclass(frozen=True)
class Result(Generic[T]):
    """One image's outcome at some stage (its bytes, its model input, its row, its top-k), or a
    request's: the value, or the RequestError that it alone caused.

    The plain functions raise RequestError; `of` and `then` turn that into a Result, and an error
    passes through every later stage untouched, so only the code writing an answer asks which it holds."""

    value: T | None = None
    error: RequestError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @staticmethod
    def of(step: Callable[..., T], *args: object) -> Result[T]:
        """`step(*args)`, or the RequestError it raised."""
        try:
            return Result(step(*args))
        except RequestError as error:
            return Result(error=error)

    def then(self, step: Callable[[T], U]) -> Result[U]:
        """The next stage on the value; an error goes on as it is."""
        if self.error is not None:
            return Result(error=self.error)
        return Result.of(step, self.value)
