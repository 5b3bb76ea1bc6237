"""Streamlit operator page: the model's versions (gate figures, promote, roll back), its workers (status, PID,
memory, threads), the last minutes of throughput and latency, refusals by type, and a control that scales
the workers.

Shown only when the UI starts with TS_UI_OPERATOR=1 (ui/operator_app.py adds it to the navigation).
The management key stays in this Python process (service.client.api reads the key file); the browser
only sees the page.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from service.client.api import Settings, TorchServeClient
from ui.metrics_query import PrometheusAPI
from ui.operator_data import (
    PROMETHEUS_ENV,
    MetricsHistory,
    operator_enabled,
    prometheus_points,
    refusals,
    scale,
    worker_rows,
)
from ui.versions_data import promote, roll_back, version_table

REFRESH_SECONDS = 3
MAX_WORKERS = max(4, 2 * (os.cpu_count() or 1))


def operator_client(settings: Settings) -> TorchServeClient:
    key = repr(settings)
    if st.session_state.get("operator_settings") != key:
        st.session_state.operator_client = settings.client(timeout=120)
        st.session_state.operator_settings = key
        st.session_state.metrics_history = MetricsHistory(settings.model)
    return st.session_state.operator_client


def show_charts(client: TorchServeClient, settings: Settings) -> list:
    """Throughput and latency over the last minutes; returns the latest metrics reading."""
    history: MetricsHistory = st.session_state.metrics_history
    try:
        history.add(client.metrics().text)
    except OSError as e:
        st.warning(f"metrics port unreachable ({settings.endpoints.metrics}): {e}")
    prometheus = os.environ.get(PROMETHEUS_ENV)
    points = prometheus_points(PrometheusAPI(prometheus), settings.model) if prometheus else history.points()
    st.caption(f"Source: {'Prometheus at ' + prometheus if prometheus else 'the metrics port, read every few seconds'}")
    if points:
        frame = pd.DataFrame(points)
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        frame = frame.set_index("time")
        left, right = st.columns(2)
        left.markdown("**Throughput** (images/s)")
        left.line_chart(frame[["images/s"]], height=220)
        right.markdown("**Forward pass per image** (ms, p50 / p95)")
        right.line_chart(frame[[c for c in frame.columns if c.startswith("forward")]], height=220)
    else:
        st.info("Charts start after two readings of the metrics.")
    return history.latest()


@st.fragment(run_every=REFRESH_SECONDS)
def live(settings: Settings) -> None:
    client = operator_client(settings)
    samples = show_charts(client, settings)
    st.subheader("Workers")
    try:
        described = client.describe_model(settings.model)
        rows = worker_rows(described.json(), samples) if described.ok else []
        if not described.ok:
            st.error(f"management API: {described.status_code} {described.text[:200]}")
    except (OSError, ValueError) as e:
        rows = []
        st.error(f"management API unreachable ({settings.endpoints.management}): {e}")
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="workers")
    st.subheader("Refusals by type")
    refused = refusals(samples, settings.model)
    if refused:
        st.bar_chart(pd.Series(refused, name="refused"), horizontal=True, height=60 + 40 * len(refused))
    else:
        st.caption("None since the server started.")


def show_versions(settings: Settings) -> None:
    """Every version with its gate figures; promote one, or roll back to the previous default."""
    st.subheader("Versions")
    client = operator_client(settings)
    rows, problem = version_table(client, settings)
    if problem:
        st.warning(f"Versions unavailable: {problem}")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="versions")
    others = [r["version"] for r in rows if not r["default"]]
    left, right = st.columns(2)
    with left.form("promote"):
        version = st.selectbox("Version to promote", others, disabled=not others)
        if st.form_submit_button("Promote", disabled=not others):
            report(*promote(client, settings, str(version)))
    if right.button("Roll back to the previous default"):
        report(*roll_back(client, settings))


def report(ok: bool, message: str) -> None:
    """Keep the outcome across the rerun that redraws the table with the new default."""
    st.session_state.versions_outcome = (ok, message)
    st.rerun()


def show_outcome() -> None:
    outcome = st.session_state.pop("versions_outcome", None)
    if outcome:
        ok, message = outcome
        (st.success if ok else st.error)(f"{'Done' if ok else 'Refused'}: {message}")


def render() -> None:
    if not operator_enabled():  # the router adds this page only when on; never serve it otherwise
        st.error("The operator page is off: start the UI with TS_UI_OPERATOR=1 (make ui OPERATOR=1).")
        return
    settings = Settings.from_env()
    st.title("Operator")
    st.caption(f"Model `{settings.model}` · management API {settings.endpoints.management}")
    with st.form("scale"):
        workers = st.number_input("Workers for this model", min_value=1, max_value=MAX_WORKERS, value=1, step=1)
        if st.form_submit_button("Scale workers"):
            with st.spinner(f"Scaling {settings.model} to {workers} worker(s)…"):
                ok, message = scale(operator_client(settings), settings.model, int(workers))
            (st.success if ok else st.error)(f"{'Scaled' if ok else 'Not scaled'}: {message}")
    show_outcome()
    live(settings)
    show_versions(settings)  # after the workers: the workers table stays the page's first
