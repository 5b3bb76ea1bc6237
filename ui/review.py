"""Review the uncertain photos one after another: confirm the top label, give the right one, or skip.

Each answer goes to the same feedback folder as a card's "Is this right?" (ui/feedback_store.py), so
the next fine-tune reads them; the buttons are callbacks, so the next photo is drawn at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from service.client.api import Settings
from ui.feedback import feedback_store, model_labels
from ui.feedback_store import FeedbackError
from ui.logic import Outcome, percent, preview
from ui.results import ResultRow

DONE_KEY = "review_done"  # keys of the photos reviewed (saved or skipped) in this session
MESSAGE_KEY = "review_message"
THUMBNAIL_WIDTH = 260


def next_to_review(rows: Sequence[ResultRow], keys: Sequence[str], done: set[str]) -> tuple[int, ResultRow] | None:
    """(how many of `rows` are reviewed, the first one not reviewed yet), or None when all are."""
    waiting = [row for row in rows if keys[row.position] not in done]
    return (len(rows) - len(waiting), waiting[0]) if waiting else None


def answer(key: str, data: bytes, outcome: Outcome, label: str | None) -> None:
    """A button's callback: store `label` (None: skip) and move on; a refused label stays on this photo."""
    done: set[str] = st.session_state.setdefault(DONE_KEY, set())
    if label is None:
        done.add(key)
        st.session_state[MESSAGE_KEY] = ("info", f"Skipped {outcome.filename}.")
        return
    try:
        saved = feedback_store().save(data, label, outcome.model, outcome.predictions[0])
    except FeedbackError as e:
        st.session_state[MESSAGE_KEY] = ("error", str(e))
        return
    except OSError as e:
        st.session_state[MESSAGE_KEY] = ("error", f"The correction could not be stored ({e.strerror}).")
        return
    done.add(key)
    st.session_state[MESSAGE_KEY] = ("success", f"{outcome.filename}: {saved.message()}")


def picked_label(key: str) -> str | None:
    typed = str(st.session_state.get(f"review-new:{key}") or "").strip()
    return typed or st.session_state.get(f"review-pick:{key}")


def show_review(
    uncertain: Sequence[ResultRow],
    photos: Sequence[tuple[str, bytes]],
    outcomes: Sequence[Outcome | None],
    keys: Sequence[str],
    settings: Settings,
) -> None:
    """The review box: one uncertain photo at a time, in upload order."""
    if not uncertain:
        return
    with st.expander(f"Review the {len(uncertain)} uncertain photos one by one", icon=":material/rule:"):
        kind, message = st.session_state.get(MESSAGE_KEY, (None, None))
        slot = st.empty()  # always there, so what follows keeps its place from one answer to the next
        if message:
            getattr(slot, kind)(message)
        found = next_to_review(uncertain, keys, st.session_state.get(DONE_KEY, set()))
        if found is None:
            st.success("Every uncertain photo is reviewed.", icon=":material/task_alt:")
            return
        reviewed, row = found
        key, data, outcome = keys[row.position], photos[row.position][1], outcomes[row.position]
        if outcome is None or not outcome.predictions:  # an uncertain row has an answer; this is for the types
            return
        st.markdown(f"**Photo {reviewed + 1} of {len(uncertain)}: {row.file}**")
        left, right = st.columns([1, 2], gap="medium")
        with left:
            image = preview(data)
            if image is not None:
                st.image(image, width=THUMBNAIL_WIDTH)
        with right:
            st.markdown(
                "  \n".join(
                    f"{rank}. {p['label']} — {percent(p['probability'])}"
                    for rank, p in enumerate(outcome.predictions, start=1)
                )
            )
            top = outcome.predictions[0]["label"]
            st.button(
                f"Yes, it is {top}",
                key=f"review-yes:{key}",
                icon=":material/check:",
                on_click=answer,
                args=(key, data, outcome, top),
            )
            labels = model_labels(settings.model, st.session_state.client) or [p["label"] for p in outcome.predictions]
            st.selectbox(
                "No, it is…",
                labels,
                index=None,
                key=f"review-pick:{key}",
                placeholder="Type to search the model's labels",
            )
            st.text_input(
                "…or a class the model does not know", key=f"review-new:{key}", placeholder="e.g. my cat Felix"
            )
            save, skip = st.columns(2)
            with save:
                st.button(
                    "Save and next",
                    key=f"review-save:{key}",
                    disabled=not picked_label(key),
                    on_click=lambda: answer(key, data, outcome, picked_label(key)),
                )
            with skip:
                st.button("Skip", key=f"review-skip:{key}", on_click=answer, args=(key, data, outcome, None))
