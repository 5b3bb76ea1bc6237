"""Which models the server serves and what each one is, for the page's model picker (no Streamlit here).

Everything comes from the management API: GET /models for the names, GET /models/{name}?customized=true
for the handler's own description of a worker (handler/torchserve_handler.py describe()): its classes, its
weights and, for a fine-tuned model, the training record the archive carries. Without the management
key there is no list, and the page serves TS_MODEL alone, as it always has.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from service.client.api import TorchServeClient, is_token_error
from service.versions.store import version_key

MAX_CLASS_NAMES = 6  # a fine-tuned model's classes named in the sidebar; more are counted, not listed


@dataclass(frozen=True)
class ModelFacts:
    """One served model as its handler describes it, or why that description could not be read."""

    name: str
    classes: int | None = None
    weights: str | None = None
    training: dict | None = None  # provenance.json's `training`: fine-tuned models only
    problem: str | None = None  # a friendly sentence when the description could not be read
    versions: tuple[str, ...] = ()  # every registered version (manage.py deploy adds them)
    default_version: str | None = None  # the one answering /predictions/{name}

    def option_label(self) -> str:
        """The picker's line for this model: enough to tell the models apart in a narrow sidebar."""
        if self.problem:
            return f"{self.name} — description unavailable"
        return f"{self.name} — {self.classes} classes, {'fine-tuned' if self.training else self.weights}"

    def versions_line(self) -> str:
        """Markdown: every version, the default marked (the one that answers)."""
        marked = [f"**{v} (default)**" if v == self.default_version else v for v in self.versions]
        return f"**Versions:** {' · '.join(marked)}"


def served_models(client: TorchServeClient) -> list[str]:
    """The registered models' names, or [] when they cannot be listed (no management key, server down)."""
    try:
        response = client.list_models()
        if response.status_code != 200:
            return []
        return sorted({str(m["modelName"]) for m in response.json()["models"]})
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return []


def describe(client: TorchServeClient, name: str) -> ModelFacts:
    """The handler's description of `name` (never raises; a failure becomes `problem`)."""
    try:
        response = client.describe_model(name, customized=True)
    except requests.RequestException as e:
        return ModelFacts(name, problem=f"the management API could not be reached ({type(e).__name__})")
    if is_token_error(response):
        return ModelFacts(name, problem="the server refused the management key (see TS_KEY_FILE)")
    if response.status_code == 404:
        return ModelFacts(name, problem="the server no longer serves it")
    if response.status_code != 200:
        return ModelFacts(name, problem=f"the server could not describe it ({response.status_code})")
    try:
        default = response.json()[0]
        described = default["customizedMetadata"]
        return ModelFacts(
            name,
            classes=int(described["classes"]),
            weights=str(described["model"]["weights"]),
            training=described.get("training") or None,
            versions=registered_versions(client, name),
            default_version=str(default["modelVersion"]) if "modelVersion" in default else None,
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return ModelFacts(name, problem="the server did not describe it (its worker may still be starting)")


def registered_versions(client: TorchServeClient, name: str) -> tuple[str, ...]:
    """Every registered version of `name`, oldest first (empty if they cannot be listed)."""
    try:
        response = client.describe_versions(name)
        found = {str(v["modelVersion"]) for v in response.json()} if response.status_code == 200 else set()
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return ()
    return tuple(sorted(found, key=version_key))


def default_choice(names: list[str], wanted: str) -> int:
    """TS_MODEL picks the default; a name the server does not serve falls back to the first model."""
    return names.index(wanted) if wanted in names else 0


def provenance_lines(facts: ModelFacts) -> list[str]:
    """Markdown lines for the picked model: its classes count and, for a fine-tuned model, how it was made.

    The weights of any other model are already on the sidebar's model card (from its answers)."""
    if facts.problem:
        return []
    lines = [f"**Classes:** {facts.classes}"] + ([facts.versions_line()] if facts.versions else [])
    training = facts.training
    if not training:
        return lines
    dataset = training.get("dataset") or {}
    skipped = f", {dataset['unreadable']} unreadable skipped" if dataset.get("unreadable") else ""
    lines.append(f"**Fine-tuned from:** `{training.get('base_weights')}`")
    lines.append(f"**Dataset:** {dataset.get('images')} images in `{dataset.get('folder')}`{skipped}")
    lines.append(f"**Trained classes** (train+val): {class_counts(training.get('classes') or {})}")
    lines.append(f"**Epochs:** {epochs(training.get('epochs'))}")
    accuracy = training.get("validation_accuracy")
    if isinstance(accuracy, (int, float)):
        lines.append(f"**Validation accuracy:** {accuracy * 100:.1f}%")
    return lines


def class_counts(classes: dict) -> str:
    named = [f"{name} {c.get('train')}+{c.get('val')}" for name, c in list(classes.items())[:MAX_CLASS_NAMES]]
    more = len(classes) - len(named)
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def epochs(record: object) -> str:
    """{"head": 10, "full": 4} (one count per training phase) reads as "head 10, full 4"."""
    if isinstance(record, dict):
        return ", ".join(f"{phase} {count}" for phase, count in record.items())
    return str(record)
