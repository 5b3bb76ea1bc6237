"""The "Is this right?" form of a result card: confirm the top label, pick the right one, or type a new one.

The UI process stores the photo and the label in the feedback folder (ui/feedback_store.py, which
checks every label before it becomes a folder); the browser only ever sends text and clicks.
"""

from __future__ import annotations

import requests
import streamlit as st

from service.client.api import TorchServeClient
from ui.feedback_store import FeedbackError, FeedbackStore
from ui.logic import Outcome

LABELS_TTL_S = 300


@st.cache_resource(show_spinner=False)
def feedback_store() -> FeedbackStore:
    """One store per UI process: its lock serializes the sessions' writes."""
    return FeedbackStore.from_env()


@st.cache_data(ttl=LABELS_TTL_S, show_spinner=False)
def model_labels(model: str, _client: TorchServeClient) -> list[str]:
    """Every label the model knows (the handler's own description, on the management API); [] without access."""
    try:
        response = _client.describe_model(model, customized=True)
        if response.status_code == 200:
            return [str(label) for label in response.json()[0]["customizedMetadata"].get("labels") or []]
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    return []


def save(key: str, data: bytes, label: str, outcome: Outcome) -> None:
    """Store the correction; the outcome (saved or why not) is shown on the next render of the card."""
    try:
        saved = feedback_store().save(data, label, outcome.model, outcome.predictions[0])
        st.session_state[f"feedback:{key}"] = ("success", saved.message())
    except FeedbackError as e:
        st.session_state[f"feedback:{key}"] = ("error", str(e))
    except OSError as e:
        st.session_state[f"feedback:{key}"] = ("error", f"The correction could not be stored ({e.strerror}).")


def show_feedback(key: str, data: bytes, outcome: Outcome, labels: list[str]) -> None:
    """Under a result: confirm, pick from the model's labels (searchable), or type a new class name."""
    top = outcome.predictions[0]["label"]
    with st.expander("Is this right?"):
        if st.button(f"Yes, it is {top}", key=f"yes:{key}", icon=":material/check:"):
            save(key, data, top, outcome)
        choices = labels or [p["label"] for p in outcome.predictions]
        picked = st.selectbox("No, it is…", choices, index=None, key=f"pick:{key}",
                              placeholder="Type to search the model's labels")
        typed = st.text_input("…or a class the model does not know", key=f"new:{key}",
                              placeholder="e.g. my cat Felix")
        if st.button("Save the right label", key=f"save:{key}", disabled=not (picked or typed.strip())):
            save(key, data, typed.strip() or picked or "", outcome)
        kind, message = st.session_state.get(f"feedback:{key}", (None, None))
        if kind == "success":
            st.success(message, icon=":material/task_alt:")
        elif kind == "error":
            st.error(message, icon=":material/block:")
