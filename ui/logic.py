"""What the page shows, worked out without Streamlit: server state, one file's outcome, friendly messages.

The page (ui/app.py) only lays these out. Every HTTP call goes through service/client/api.py,
the client the scripts and tests use too; nothing here ever returns a key, so nothing the
page renders can leak one to the browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests
from PIL import Image

from handler.images import decode_image
from handler.settings import DEFAULTS
from service.client.api import Settings, TorchServeClient, is_token_error, ready_workers
from service.photos import warm_up_jpeg

START_COMMAND = "make run"
MAX_TOPK = 10  # the slider's end: more labels than this are not worth reading on a page
PREVIEW_SIDE = 480
PROBE_SIZE = (64, 64)  # the model-card probe: as cheap an inference as the server accepts


@dataclass
class ServerState:
    """The sidebar: can we reach the model, and what the server says about it."""

    reachable: bool
    problem: str | None = None  # a friendly sentence when something is wrong
    model: dict = field(default_factory=dict)  # name, version, arch, weights, random_weights (from an answer)
    warning: str | None = None
    workers: int | None = None  # READY workers, None when unknown
    max_workers: int | None = None

    @property
    def random_weights(self) -> bool:
        return bool(self.model.get("random_weights"))


@dataclass
class Outcome:
    """One uploaded file: its predictions, or a friendly error for that file alone."""

    filename: str
    predictions: list[dict] = field(default_factory=list)
    model: dict = field(default_factory=dict)
    warning: str | None = None
    error: str | None = None
    retry: bool = False  # worth sending again later (busy, down, timeout): not cached

    @property
    def ok(self) -> bool:
        return self.error is None


def down_message(settings: Settings) -> str:
    return (
        f"TorchServe is not running at {settings.endpoints.inference}. "
        f"Start it with `{START_COMMAND}` (TorchServe and this page), then reload."
    )


def token_message(settings: Settings) -> str:
    return (
        f"TorchServe refused the inference token. This page reads it from {settings.key_file}; "
        "if the server runs from another directory, set TS_KEY_FILE to its key_file.json "
        "(or TS_INFERENCE_KEY), or restart it with `make run`."
    )


def busy_message() -> str:
    return "The server is busy right now (its queue is full). Try again in a moment."


def error_message(response: requests.Response, filename: str, settings: Settings) -> tuple[str, bool]:
    """(friendly message, worth retrying) for a non-200 answer to one file."""
    try:
        body = response.json()
        detail = str(body.get("message", "")) if isinstance(body, dict) else ""
        kind = str(body.get("type", "")) if isinstance(body, dict) else ""
    except ValueError:
        detail, kind = "", ""
    if is_token_error(response):
        return token_message(settings), True
    return error_text(response.status_code, kind, detail, filename, settings)


def error_text(status: int, kind: str, detail: str, filename: str, settings: Settings) -> tuple[str, bool]:
    """(friendly message, worth retrying) for an error status, its TorchServe type and message: a
    whole answer's, or one photo's entry in the answer to a request of several."""
    if status == 415 or kind == "UnsupportedImage":
        advice = detail.removeprefix("not a supported image; ").rstrip(".")
        advice = f" {advice[:1].upper()}{advice[1:]}." if advice else ""
        return f"**{filename}** is not an image this server can read.{advice}", False
    if status == 413 or kind == "ImageTooLarge":
        why = detail or "it is over the server's request size limit"
        return f"**{filename}** is too large for the server: {why}.", False
    if kind in ("InvalidImage", "MissingImage"):
        return f"**{filename}** could not be decoded as an image: {detail}.", False
    if kind == "ArchiveIntegrityError":  # 503 too, but no retry will help: the archive must be rebuilt
        return f"The server refuses to serve its model: {detail}.", False
    if status == 503:
        return busy_message(), True
    if status == 404:
        return f"The server has no model named `{settings.model}` (set TS_MODEL). {detail}".strip(), False
    if status in (408, 504):
        return f"The server took too long on **{filename}**. Try again.", True
    return f"The server could not classify **{filename}** ({status}). {detail}".strip(), status >= 500


def classify(client: TorchServeClient, settings: Settings, data: bytes, filename: str, topk: int) -> Outcome:
    """Send the file's bytes as they are (the server decodes and resizes); never raises."""
    try:
        response = client.predict(settings.model, data, topk=topk, filename=filename)
    except requests.ConnectionError:
        if len(data) > 8 * 1024 * 1024:  # TorchServe may drop the connection on an oversized body
            return Outcome(filename, error=f"**{filename}** could not be sent: the server closed the connection "
                           f"(it is {len(data) / 1e6:.0f} MB; the server may refuse files that large).")
        return Outcome(filename, error=down_message(settings), retry=True)
    except requests.Timeout:
        return Outcome(filename, error=f"The server took too long on **{filename}**. Try again.", retry=True)
    except requests.RequestException as e:
        return Outcome(filename, error=f"Could not reach the server: {type(e).__name__}.", retry=True)
    if response.status_code != 200:
        message, retry = error_message(response, filename, settings)
        return Outcome(filename, error=message, retry=retry)
    try:
        answer = response.json()
        predictions = sorted(answer["predictions"], key=lambda p: p["probability"], reverse=True)
    except (ValueError, KeyError, TypeError):
        return Outcome(filename, error=f"The server's answer for **{filename}** was not the expected JSON.")
    return Outcome(filename, predictions, answer.get("model") or {}, answer.get("warning"))


def server_state(client: TorchServeClient, settings: Settings) -> ServerState:
    """Ping, then one tiny prediction for the model card, then the worker count (never raises).

    Name, version and weights exist only in prediction answers (the handler reports them);
    the worker count only on the management API, which this server-side process calls with
    the key file's management key. Neither key is ever part of what the page renders.
    """
    try:
        ping = client.ping()
    except requests.RequestException:
        return ServerState(False, down_message(settings))
    if is_token_error(ping):
        return ServerState(True, token_message(settings))
    probe = classify(client, settings, warm_up_jpeg(PROBE_SIZE), "probe.jpg", topk=1)
    if not probe.ok:
        return ServerState(True, probe.error)
    state = ServerState(True, None, probe.model, probe.warning)
    state.workers, state.max_workers = worker_count(client, settings.model)
    return state


def worker_count(client: TorchServeClient, model: str) -> tuple[int | None, int | None]:
    """(READY workers, maxWorkers) of the default version, or (None, None) without management access."""
    try:
        response = client.describe_model(model)
        if response.status_code != 200:
            return None, None
        version = response.json()[0]
        return ready_workers(version)[0], version.get("maxWorkers")
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
        return None, None


def percent(probability: float) -> str:
    """Percent with one decimal; tiny values say so instead of rounding to a misleading 0.0%."""
    value = probability * 100
    return "<0.1%" if 0 < value < 0.05 else f"{value:.1f}%"


def preview(data: bytes) -> Image.Image | None:
    """A small thumbnail of what the server will see (the server gets the original), or None.

    Decoded by the handler's own decode_image: the same formats (HEIC too), orientation,
    transparency and colour handling, and a JPEG decoded at reduced size."""
    try:
        image = decode_image(data, DEFAULTS.max_pixels, min_side=PREVIEW_SIDE)
        image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        return image
    except Exception:  # noqa: BLE001 - any undecodable file just has no preview
        return None
