"""Checks of what a stream delivered that many tests make: the envelope, and the event ids
(present, well formed, increasing along a stream)."""

import itertools
import time
from typing import Any

from realtime import ids
from tests.support.sse import AMBIENT, SSEEvent

ENVELOPE_KEYS = {"type", "payload", "timestamp", "source"}


def check_envelope(event: SSEEvent, source: str) -> None:
    """The four envelope keys, a server-set integer timestamp and the expected source."""
    assert set(event.data) == ENVELOPE_KEYS, event.data
    assert event.data["source"] == source, event
    timestamp = event.data["timestamp"]
    assert isinstance(timestamp, int) and not isinstance(timestamp, bool), event
    assert abs(timestamp - time.time()) < 120, event


def check_ids(events: list[SSEEvent], *, strictly: bool = True) -> None:
    """Every event but the AMBIENT ones carries an id; ids increase within the stream
    (``strictly``: no two equal; the ``connected`` id is a position, it may equal nothing but
    precede all)."""
    with_ids = [event for event in events if event.type not in AMBIENT]
    event_ids: list[str] = []
    for event in with_ids:
        assert event.id is not None and ids.is_event_id(event.id), event
        event_ids.append(event.id)
    positions = [ids.parse(event_id) for event_id in event_ids]
    assert positions == sorted(positions), event_ids
    if strictly:
        repeated = [
            (before.type, after.type, after.id)
            for (before, after), (earlier, later) in zip(
                itertools.pairwise(with_ids), itertools.pairwise(positions), strict=True
            )
            if earlier >= later
        ]
        assert not repeated, f"{len(repeated)} ids not above the previous one: {repeated[:5]}"


def check_strictly_increasing(after: str, events: list[SSEEvent]) -> None:
    """Every event has an id, the first is past ``after``, each past the one before."""
    keys = [ids.parse(after)]
    for event in events:
        assert event.id is not None and ids.is_event_id(event.id), event
        keys.append(ids.parse(event.id))
    bad = [(a, b) for a, b in itertools.pairwise(keys) if not a < b]
    assert not bad, f"ids not strictly increasing from {after}: {bad[:5]}"


def wire(events: list[SSEEvent]) -> list[tuple[str | None, dict[str, Any]]]:
    """What a client can compare across streams: each event's id and whole envelope."""
    return [(event.id, event.data) for event in events]
