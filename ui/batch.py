"""Many photos at once: sent several to a request, a few requests in flight, answers back per photo.

No Streamlit here: the page (ui/app.py) passes a progress callback and draws the bar. Photos go in
multipart requests of PER_REQUEST (the server takes up to 32, handler/settings.py), PARALLEL of them
at a time so TorchServe's batching has work queued; a busy server (503) or a dropped connection is
retried after a pause; a request refused as a whole for another reason (too large, say) is resent
photo by photo, so each photo gets its own answer. Measured in docs/PERFORMANCE.md (UI batches).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import requests

from service.client.api import Settings, TorchServeClient, is_token_error
from service.client.upload import UPLOAD_MAX_BYTES
from ui.logic import Outcome, classify, down_message, error_message, error_text

PER_REQUEST = 8  # photos per request: faster than 1 per request for 120 photos (docs/PERFORMANCE.md)
PARALLEL = 4  # requests in flight
MAX_REQUEST_BYTES = 3 * UPLOAD_MAX_BYTES  # under config.properties' max_request_size (42 MiB) with room
RETRY_PAUSES_S = (0.5, 1.0, 2.0)  # after a 503 or a dropped connection; then the photos keep their error


@dataclass(frozen=True)
class Progress:
    """What the page shows while a batch runs."""

    done: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        """Photos per second so far."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        return f"Classifying… {self.done}/{self.total} photos done · {self.rate:.1f} photos/s"


def chunks(sizes: Sequence[int], per_request: int, max_bytes: int = MAX_REQUEST_BYTES) -> list[list[int]]:
    """Indexes of the photos, in order, grouped into requests of at most `per_request` photos and about
    `max_bytes` (a photo larger than that goes alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    weight = 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= per_request or weight + size > max_bytes):
            groups.append(current)
            current, weight = [], 0
        current.append(index)
        weight += size
    if current:
        groups.append(current)
    return groups


def outcomes_of(answer: dict, names: Sequence[str], settings: Settings) -> list[Outcome] | None:
    """One outcome per photo from the answer to a request of several, or None if it is not that shape."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != len(names):
        return None
    model = answer.get("model") or {}
    warning = answer.get("warning")
    outcomes = []
    for name, entry in zip(names, results, strict=True):
        if isinstance(entry, dict) and isinstance(entry.get("predictions"), list):
            predictions = sorted(entry["predictions"], key=lambda p: p["probability"], reverse=True)
            outcomes.append(Outcome(name, predictions, model, warning))
        elif isinstance(entry, dict) and "error" in entry:
            status = int(entry.get("code") or 500)
            message, retry = error_text(status, str(entry.get("type", "")), str(entry["error"]), name, settings)
            outcomes.append(Outcome(name, model=model, error=message, retry=retry))
        else:
            return None
    return outcomes


def send_once(
    client: TorchServeClient, settings: Settings, photos: Sequence[tuple[str, bytes]], topk: int
) -> list[Outcome]:
    """One request for these photos (one photo: the plain request); never raises."""
    if len(photos) == 1:
        name, data = photos[0]
        return [classify(client, settings, data, name, topk)]
    names = [name for name, _ in photos]
    try:
        response = client.predict_many(settings.model, photos, topk=topk)
    except requests.RequestException as e:
        message = (
            down_message(settings)
            if isinstance(e, requests.ConnectionError)
            else (f"Could not reach the server: {type(e).__name__}.")
        )
        return [Outcome(name, error=message, retry=True) for name in names]
    try:
        answer = response.json()
    except ValueError:
        answer = None
    found = outcomes_of(answer, names, settings) if answer is not None else None
    if found is not None:  # also a 4xx whose body holds each photo's reason
        return found
    if response.status_code == 200:
        return [Outcome(n, error=f"The server's answer for **{n}** was not the expected JSON.") for n in names]
    message, retry = error_message(response, names[0], settings)
    if retry or is_token_error(response):
        return [Outcome(name, error=message, retry=True) for name in names]
    # refused as a whole (too large, say): each photo on its own, for its own answer
    return [classify(client, settings, data, name, topk) for name, data in photos]


def send(
    client: TorchServeClient,
    settings: Settings,
    photos: Sequence[tuple[str, bytes]],
    topk: int,
    pauses: Sequence[float] = RETRY_PAUSES_S,
) -> list[Outcome]:
    """send_once, and again after each pause for the photos whose outcome is worth retrying."""
    outcomes = send_once(client, settings, photos, topk)
    for pause in pauses:
        again = [i for i, outcome in enumerate(outcomes) if outcome.retry]
        if not again:
            break
        time.sleep(pause)
        for i, outcome in zip(again, send_once(client, settings, [photos[i] for i in again], topk), strict=True):
            outcomes[i] = outcome
    return outcomes


def classify_many(
    client: TorchServeClient,
    settings: Settings,
    photos: Sequence[tuple[str, bytes]],
    topk: int,
    per_request: int = PER_REQUEST,
    parallel: int = PARALLEL,
    progress: Callable[[Progress], None] | None = None,
) -> Iterator[tuple[int, Outcome]]:
    """(index in `photos`, outcome) as answers arrive; `progress` is called in the caller's thread.

    If the caller stops early (the page reruns), requests not yet sent are cancelled."""
    groups = chunks([len(data) for _, data in photos], per_request)
    start = time.monotonic()
    done = 0
    pool = ThreadPoolExecutor(parallel)
    try:
        pending: dict[Future[list[Outcome]], list[int]] = {
            pool.submit(send, client, settings, [photos[i] for i in group], topk): group for group in groups
        }
        if progress:
            progress(Progress(0, len(photos), 0.0))
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                group = pending.pop(future)
                for index, outcome in zip(group, future.result(), strict=True):
                    done += 1
                    yield index, outcome
                if progress:
                    progress(Progress(done, len(photos), time.monotonic() - start))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
