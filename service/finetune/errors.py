"""The one error fine-tuning raises on purpose."""

from __future__ import annotations


class FinetuneError(Exception):
    """A reason no model can be fine-tuned (or no archive written), worded for the person running it."""
