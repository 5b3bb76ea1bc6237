"""The sidebar's model section: a picker when the server serves more than one model, and the picked
model's classes count and provenance (ui/models.py reads them from the management API).

The pick only changes which model the page's requests name; the client, its keys and the server stay.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from service.client.api import Settings, TorchServeClient
from ui.models import ModelFacts, default_choice, describe, provenance_lines, served_models


def answered_by(model: dict) -> str:
    """The caption under each answer: which model and version gave it (versions switch on promote/rollback)."""
    return f"Answered by `{model.get('name')}` version `{model.get('version')}`" if model.get("name") else ""


MODELS_TTL_S = 10
PICKER_KEY = "model_picker"


@st.cache_data(ttl=MODELS_TTL_S, show_spinner=False)
def cached_models(settings_key: str, _client: TorchServeClient) -> dict[str, ModelFacts]:
    """Every served model's description for a few seconds, so a click that reruns the page does not re-ask."""
    return {name: describe(_client, name) for name in served_models(_client)}


def show_model_picker(client: TorchServeClient, settings: Settings) -> tuple[Settings, int | None]:
    """Draw the section; returns the settings with the picked model (unchanged when there is nothing to pick)
    and its classes count when known (the server refuses a top-k above it).

    One model: no picker, as before; its facts show if it is TS_MODEL's. No management access: nothing."""
    models = cached_models(repr(settings), client)
    if len(models) < 2 and settings.model not in models:
        return settings, None
    names = list(models)
    with st.sidebar:
        st.header("Model")
        picked = settings.model
        if len(names) > 1:
            picked = st.selectbox(
                "Served models",
                names,
                index=default_choice(names, settings.model),
                format_func=lambda name: models[name].option_label(),
                key=PICKER_KEY,
                help="Answers come from the model picked here; TS_MODEL sets the default.",
            )
            if settings.model not in models:
                st.caption(f"TS_MODEL `{settings.model}` is not served here.")
        facts = models[picked]
        if facts.problem:
            st.warning(f"Could not read what `{facts.name}` is: {facts.problem}. Its answers still come from it.",
                       icon=":material/help:")
        else:
            st.markdown("  \n".join(provenance_lines(facts)))
    return dataclasses.replace(settings, model=picked), facts.classes
