"""The "Why?" toggle of a result card: the server's explanation of the top label, as an overlay on the photo.

Fetched once per photo (POST /explanations through service/client/api.py) when the toggle is first
switched on, and kept in the session; a busy or failed answer is not kept, so switching again retries.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import requests
import streamlit as st

from service.client.api import Settings, TorchServeClient
from ui.logic import down_message, error_message, percent

SENSITIVITY_NOTE = (
    "Bright areas are where hiding part of the photo lowered the model's score for this label the most. "
    "This shows sensitivity, not certainty: it says what the answer depended on, not whether it is right."
)


@dataclass
class Explained:
    overlay: bytes | None = None
    label: str = ""
    probability: float = 0.0
    error: str | None = None
    retry: bool = False


def fetch_explanation(client: TorchServeClient, settings: Settings, data: bytes, filename: str) -> Explained:
    """The explanation of the photo's top class, or a friendly error (never raises)."""
    try:
        response = client.explain(settings.model, data, filename=filename)
    except requests.RequestException:
        return Explained(error=down_message(settings), retry=True)
    if response.status_code == 503 and "ExplanationBusy" in response.text:
        return Explained(error="Explanations are busy right now (they may use only part of the server's time, "
                               "so predictions stay fast). Switch **Why?** off and on again in a moment.", retry=True)
    if response.status_code != 200:
        message, retry = error_message(response, filename, settings)
        return Explained(error=message, retry=retry)
    try:
        found = response.json()["explanations"][0]
        return Explained(base64.b64decode(found["overlay_png"]), str(found["target"]["label"]),
                         float(found["target"]["probability"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return Explained(error=f"The server's explanation for **{filename}** was not the expected JSON.")


def show_why(key: str, data: bytes, filename: str, client: TorchServeClient, settings: Settings, column) -> None:
    """The toggle (where this is called) and, while it is on, the overlay in `column`."""
    if not st.toggle("Why?", key=f"why:{key}", help="Show which parts of the photo the top label depended on"):
        return
    cache: dict[str, Explained] = st.session_state.setdefault("explanations", {})
    if key not in cache:
        with st.spinner("Explaining…"):
            found = fetch_explanation(client, settings, data, filename)
        if not found.retry:
            cache[key] = found
    else:
        found = cache[key]
    with column:
        if found.error:
            st.warning(found.error, icon=":material/hourglass:" if found.retry else ":material/error:")
            return
        st.image(found.overlay, caption=f"Why “{found.label}” ({percent(found.probability)})", width="stretch")
        st.caption(SENSITIVITY_NOTE)
