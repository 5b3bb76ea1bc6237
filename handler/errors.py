"""The one error type a request can cause, answered as TorchServe-style JSON."""

from __future__ import annotations


class RequestError(Exception):
    """Something wrong with one request. It fails only that request, with a 4xx JSON body."""

    def __init__(self, message: str, status: int = 400, kind: str = "BadRequest") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind

    def to_json(self) -> dict[str, object]:
        return {"code": self.status, "type": self.kind, "message": self.message}
