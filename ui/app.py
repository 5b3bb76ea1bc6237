"""Streamlit page: drop photos, see TorchServe's top-k labels next to each.

Run with `make ui` (alone) or `make run` (beside TorchServe). It is one more REST client of
TorchServe: settings come from TS_INFERENCE_URL, TS_MANAGEMENT_URL, TS_MODEL, TS_KEY_FILE
(or TS_INFERENCE_KEY), with defaults matching `make run`. Keys stay in this Python process.
"""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from handler.settings import DEFAULTS
from service.client.api import Settings, TorchServeClient
from ui.batch import Progress, classify_many
from ui.cards import file_key
from ui.logic import MAX_TOPK, Outcome, ServerState, server_state
from ui.model_picker import show_model_picker
from ui.results import photo_digest
from ui.results_view import show_results
from ui.sources import pick_photos

TITLE = "Image classifier"
STATE_TTL_S = 10


def session_client(settings: Settings) -> TorchServeClient:
    """One client per browser session (its own connection pool); rebuilt if the settings change."""
    key = repr(settings)
    if st.session_state.get("client_settings") != key:
        st.session_state.client = settings.client(timeout=60)
        st.session_state.client_settings = key
        st.session_state.outcomes = {}
    return st.session_state.client


@st.cache_data(ttl=STATE_TTL_S, show_spinner=False)
def cached_server_state(settings_key: str, _client: TorchServeClient, _settings: Settings) -> ServerState:
    """Sidebar facts for a few seconds, so a click that reruns the page does not re-probe the server."""
    return server_state(_client, _settings)


def show_sidebar(state: ServerState, settings: Settings) -> int:
    """Server state and the top-k control; returns the chosen top-k."""
    with st.sidebar:
        st.header("Server")
        if state.problem:
            st.error(state.problem, icon=":material/power_off:" if not state.reachable else ":material/error:")
        else:
            st.success("TorchServe is reachable", icon=":material/check_circle:")
        st.caption(f"Inference API: {settings.endpoints.inference}")
        if state.model:
            st.markdown(
                f"**Model:** `{state.model.get('name')}` version `{state.model.get('version')}`  \n"
                f"**Architecture:** {state.model.get('arch')}  \n"
                f"**Weights:** {state.model.get('weights')}"
                + (
                    f"  \n**Runtime:** {state.model['runtime']} {state.model.get('precision') or ''}"
                    if state.model.get("runtime")
                    else ""
                )
            )
        if state.random_weights:
            st.warning(state.warning or "Random weights: the answers mean nothing.", icon=":material/warning:")
        if state.reachable and not state.problem:
            if state.workers is None:
                st.markdown("**Workers:** unknown (needs the server's key file)")
            else:
                st.markdown(f"**Workers:** {state.workers} ready (max {state.max_workers})")
        if st.button("Refresh server state"):
            cached_server_state.clear()
            st.rerun()
        st.divider()
        return st.slider("Labels per photo (top-k)", min_value=1, max_value=MAX_TOPK, value=DEFAULTS.topk)


def main() -> None:
    st.set_page_config(page_title=f"{TITLE} · TorchServe", page_icon=":material/image_search:", layout="wide")
    settings = Settings.from_env()
    client = session_client(settings)
    settings, classes = show_model_picker(client, settings)  # the picked model's, when the server serves several
    state = cached_server_state(repr(settings), client, settings)
    topk = show_sidebar(state, settings)
    topk = min(topk, classes or topk)  # a model with fewer classes answers all of them (more is refused)

    st.title(TITLE)
    st.markdown("Drop one or several photos below: each gets the labels the model finds most likely.")
    if state.random_weights:
        st.warning(
            f"**This model has random weights** ({state.model.get('weights')}): its answers mean nothing. "
            "Build the archive with real weights (`make archive FORCE=1`) for meaningful labels.",
            icon=":material/warning:",
        )
    elif state.problem:
        st.error(state.problem)

    photos = pick_photos().photos
    if not photos:
        return
    digests = [photo_digest(data) for _, data in photos]  # hashed once a run (120 photos of 4 MB: 0.3 s)
    keys = [file_key(digest, name, topk, settings.model) for digest, (name, _) in zip(digests, photos, strict=True)]
    bar = st.empty()  # drawn on every run, so the elements below keep their places (and a focused slider its focus)
    unkept = classify_new(client, settings, photos, keys, topk, bar)
    outcomes: dict[str, Outcome] = st.session_state.outcomes
    st.session_state.outcomes = {k: outcomes[k] for k in keys if k in outcomes}  # forget removed photos
    show_results(photos, [outcomes.get(k) or unkept.get(k) for k in keys], keys, digests, settings)


def classify_new(
    client: TorchServeClient,
    settings: Settings,
    photos: list[tuple[str, bytes]],
    keys: list[str],
    topk: int,
    bar: DeltaGenerator,
) -> dict[str, Outcome]:
    """Classify the photos the session has no answer for, under one progress bar (ui/batch.py). Each
    answer is kept as it arrives, so a rerun in the middle (a click) loses none of them; returned are
    the ones not kept (busy, down: shown now, asked again on the next run)."""
    outcomes: dict[str, Outcome] = st.session_state.outcomes
    new = [i for i, key in enumerate(keys) if key not in outcomes]
    unkept: dict[str, Outcome] = {}
    if not new:
        return unkept

    def show(progress: Progress) -> None:
        bar.progress(progress.done / max(progress.total, 1), text=progress.text())

    for index, outcome in classify_many(client, settings, [photos[i] for i in new], topk, progress=show):
        # the same photo and top-k get the same answer: no second request
        (unkept if outcome.retry else outcomes)[keys[new[index]]] = outcome
    bar.empty()
    return unkept


main()
