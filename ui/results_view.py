"""The overview above the cards: "N of M classified", the uncertainty threshold, the table, the chart of
top labels, the downloads, the review of uncertain photos, and the cards of the rows picked.

A batch of one photo is shown as its card alone. With more, the table comes first; cards are drawn for
the selected rows, or for every row shown when there are at most CARD_LIMIT of them (120 cards, each
with a photo and a form, would make the page slow to draw and to read).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from service.client.api import Settings
from ui.cards import show_outcome
from ui.export import to_csv, to_json
from ui.logic import Outcome
from ui.results import (
    DEFAULT_THRESHOLD,
    ResultRow,
    classified_count,
    label_counts,
    result_rows,
    table_records,
    uncertain_rows,
)
from ui.review import show_review

CARD_LIMIT = 20
THRESHOLD_KEY = "uncertain_below"
FILTER_KEY = "only_uncertain"
TABLE_HEIGHT = 420
CHART_HEIGHT = 260


def show_results(
    photos: Sequence[tuple[str, bytes]],
    outcomes: Sequence[Outcome | None],
    keys: Sequence[str],
    digests: Sequence[str],
    settings: Settings,
) -> None:
    """Everything below the picker once photos are there (outcomes[i] None: not answered yet)."""
    rows = result_rows(photos, outcomes, digests)
    st.caption(f"{classified_count(rows)} of {len(rows)} classified.")
    if len(rows) == 1:
        if outcomes[0] is not None:
            show_outcome(outcomes[0], photos[0][1], keys[0], settings)
        return
    controls, chart = st.columns([3, 2], gap="large")
    with controls:
        threshold = (
            st.slider(
                "Uncertain below (top-1 probability)",
                0,
                100,
                int(DEFAULT_THRESHOLD * 100),
                format="%d%%",
                key=THRESHOLD_KEY,
                help="Photos whose top label is less likely than this are marked "
                "uncertain: filter the table to them, or review them one by one.",
            )
            / 100
        )
        uncertain = uncertain_rows(rows, threshold)
        failed = sum(1 for row in rows if row.error)
        st.markdown(f"**{len(uncertain)} uncertain** (below {threshold:.0%}) · {failed} failed")
        only_uncertain = st.toggle("Show only the uncertain ones", key=FILTER_KEY)
        show_downloads(rows, threshold)
    with chart:
        show_chart(rows)
    shown = uncertain if only_uncertain else rows
    picked = show_table(shown, threshold, only_uncertain)
    show_review(uncertain, photos, outcomes, keys, settings)
    show_cards(picked or shown, bool(picked), photos, outcomes, keys, settings)


def show_downloads(rows: Sequence[ResultRow], threshold: float) -> None:
    """Every result as CSV and as JSON (ui/export.py), side by side."""
    files = (("CSV", to_csv, "classified.csv", "text/csv"), ("JSON", to_json, "classified.json", "application/json"))
    for column, (kind, export, file_name, mime) in zip(st.columns(len(files)), files, strict=True):
        with column:
            st.download_button(
                f"Download {kind}",
                export(rows, threshold),
                file_name=file_name,
                mime=mime,
                icon=":material/download:",
                on_click="ignore",
                width="stretch",
            )


def show_table(rows: Sequence[ResultRow], threshold: float, only_uncertain: bool) -> list[ResultRow]:
    """The sortable table of `rows`; returns the rows selected in it."""
    frame = pd.DataFrame(
        table_records(rows, threshold),
        columns=["#", "file", "top label", "probability", "other labels", "uncertain", "error"],
    )
    event = st.dataframe(
        frame,
        hide_index=True,
        height=TABLE_HEIGHT if len(rows) > 10 else "auto",
        on_select="rerun",
        selection_mode="multi-row",
        key=f"table:{only_uncertain}:{threshold if only_uncertain else ''}",  # a new table: a new selection
        column_config={
            "#": st.column_config.NumberColumn(width="small", help="Upload order"),
            "probability": st.column_config.NumberColumn("probability", format="percent", help="Of the top label"),
            "uncertain": st.column_config.CheckboxColumn(width="small"),
        },
    )
    return [rows[i] for i in event.selection.rows if i < len(rows)]


def show_chart(rows: Sequence[ResultRow]) -> None:
    counts = label_counts(rows)
    if not counts:
        return
    st.markdown("**Photos per top label**")
    frame = pd.DataFrame(counts, columns=["top label", "photos"])
    st.bar_chart(frame, x="top label", y="photos", horizontal=True, sort=False, height=CHART_HEIGHT)


def show_cards(
    rows: Sequence[ResultRow],
    selected: bool,
    photos: Sequence[tuple[str, bytes]],
    outcomes: Sequence[Outcome | None],
    keys: Sequence[str],
    settings: Settings,
) -> None:
    """The cards of the selected rows, or of every row shown when they are few enough."""
    if not selected and len(rows) > CARD_LIMIT:
        st.info(
            f"Select rows in the table to see their photos, bars, **Why?** and **Is this right?** "
            f"(cards are drawn for at most {CARD_LIMIT} photos at a time).",
            icon=":material/touch_app:",
        )
        return
    if len(rows) > CARD_LIMIT:
        st.caption(f"The first {CARD_LIMIT} of the {len(rows)} selected rows:")
    for row in rows[:CARD_LIMIT]:
        outcome = outcomes[row.position]
        if outcome is not None:
            show_outcome(outcome, photos[row.position][1], keys[row.position], settings)
