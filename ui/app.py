"""Streamlit page: drop photos, see TorchServe's top-k labels next to each.

Run with `make ui` (alone) or `make run` (beside TorchServe). It is one more REST client of
TorchServe: settings come from TS_INFERENCE_URL, TS_MANAGEMENT_URL, TS_MODEL, TS_KEY_FILE
(or TS_INFERENCE_KEY), with defaults matching `make run`. Keys stay in this Python process.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor

import streamlit as st

from handler.settings import DEFAULTS
from service.client.api import Settings, TorchServeClient
from ui.explain_view import show_why
from ui.feedback import model_labels, show_feedback
from ui.logic import MAX_TOPK, Outcome, ServerState, classify, percent, preview, server_state
from ui.model_picker import answered_by, show_model_picker

TITLE = "Image classifier"
STATE_TTL_S = 10
PARALLEL_REQUESTS = 4  # TorchServe batches concurrent requests; results still show in upload order


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


def file_key(data: bytes, name: str, topk: int, model: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}:{name}:{topk}:{model}"


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

    files = st.file_uploader(
        "Drag and drop photos here, or click to pick them",
        accept_multiple_files=True,
        help="JPEG, PNG, GIF, WebP, BMP, TIFF or HEIC; sent to the server as they are.",
    )
    if not files:
        return

    outcomes: dict[str, Outcome] = st.session_state.outcomes
    uploads = [(f.name, f.getvalue()) for f in files]
    keys = [file_key(data, name, topk, settings.model) for name, data in uploads]
    with ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
        pending: dict[str, Future[Outcome]] = {
            key: pool.submit(classify, client, settings, data, name, topk)
            for key, (name, data) in zip(keys, uploads, strict=True)
            if key not in outcomes
        }
        for key, (name, data) in zip(keys, uploads, strict=True):
            if key in pending:
                with st.spinner(f"Classifying {name}…"):
                    outcome = pending[key].result()
                if not outcome.retry:
                    outcomes[key] = outcome  # the same file and top-k get the same answer: no second request
            else:
                outcome = outcomes[key]
            show_outcome(outcome, data, key, settings)
    st.session_state.outcomes = {k: outcomes[k] for k in keys if k in outcomes}  # forget removed files
    st.caption(f"{sum(outcomes[k].ok for k in keys if k in outcomes)} of {len(uploads)} classified.")


main()
