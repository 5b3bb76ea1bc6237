"""One photo's result card: its preview, its labels with bars, the "Why?" toggle, "Is this right?".

Drawn by the results view (ui/results_view.py) for the rows a person looks at.
"""

from __future__ import annotations

import streamlit as st

from service.client.api import Settings
from ui.explain_view import show_why
from ui.feedback import model_labels, show_feedback
from ui.logic import Outcome, percent, preview
from ui.model_picker import answered_by


def file_key(digest: str, name: str, topk: int, model: str) -> str:
    """A photo's key in the session's outcomes: the same bytes (their sha256), name, top-k and model get
    one answer."""
    return f"{digest}:{name}:{topk}:{model}"


def show_outcome(outcome: Outcome, data: bytes, key: str, settings: Settings) -> None:
    """One result block: the preview on the left, labels with percentages and bars on the right, then
    the "Why?" toggle (its overlay beside the photo) and the "Is this right?" form."""
    with st.container(border=True):
        why_on = bool(st.session_state.get(f"why:{key}"))  # the toggle's state, known before it is drawn
        columns = st.columns([1, 1, 2] if why_on else [1, 2], gap="medium")
        left, why, right = columns[0], columns[1] if why_on else columns[0], columns[-1]
        with left:
            image = preview(data)
            if image is not None:
                st.image(image, caption=outcome.filename, width="stretch")
            else:
                st.markdown(f"**{outcome.filename}**  \n_no preview_")
        with right:
            if outcome.error:
                st.error(outcome.error, icon=":material/error:")
                return
            st.markdown(f"**{outcome.filename}**")
            st.caption(answered_by(outcome.model))
            for rank, p in enumerate(outcome.predictions, start=1):
                st.progress(
                    min(max(float(p["probability"]), 0.0), 1.0),
                    text=f"{rank}. **{p['label']}** — {percent(p['probability'])}",
                )
            client = st.session_state.client
            show_why(key, data, outcome.filename, client, settings, why)
            show_feedback(key, data, outcome, model_labels(settings.model, client))
