"""A history read: the events of some channels after a position, oldest first, and whether the
history still reached back to that position (what a resume reports as ``recovered``)."""

from collections.abc import Iterable
from dataclasses import dataclass

from realtime.events import Event

# The bytes a channel's history keeps by default (the pattern history of all sessions keeps
# PATTERN_HISTORY_FACTOR times as much).
HISTORY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class History:
    """Events after a position, oldest first; ``complete`` is False when some were lost."""

    events: list[Event]
    complete: bool


def merge(per_channel: Iterable[list[Event]]) -> list[Event]:
    """One oldest-first list from several channels' histories (ids are globally ordered)."""
    return sorted((e for events in per_channel for e in events), key=lambda e: e.key)
