"""The one error the archive builder raises on purpose."""

from __future__ import annotations


class BuildError(Exception):
    """A reason the archive cannot be built, worded for the person running the build."""
