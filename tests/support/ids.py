"""Test IDs that every pytest-xdist worker spells alike."""

from __future__ import annotations

from collections.abc import Set


def set_id(values: Set[object]) -> str:
    """A set spelled sorted: its repr follows hash randomisation, and pytest-xdist refuses to run
    when its workers collect differently named tests."""
    return "{" + ", ".join(repr(v) for v in sorted(values, key=repr)) + "}" if values else "set()"
