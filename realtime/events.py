"""Events as they travel: built once, encoded once, framed for SSE once, shared by every stream."""

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from realtime import ids
from schemas.envelope import check_event

# The reconnection delay (an SSE ``retry:`` line) suggested to a client whose stream the server
# ends, in milliseconds: a random one between these.
RETRY_MIN_MS = 1000
RETRY_MAX_MS = 3000


# On the wire (a pub/sub message is "<id> <data>"), the id of an ephemeral event; and its key.
EPHEMERAL_ID = "~"
EPHEMERAL_KEY = (0, -1)
# The only events that may be ephemeral: what a later reader would not miss.
EPHEMERAL_TYPES = frozenset({"typing", "queue_update"})
# Events for agents' eyes only (docs/api.md, "Private notes"): a note is published on the session's
# channel like the rest and skipped by every stream opened on the customer's side
# (realtime.subscription); whispers and barges go to agents' channels, and are skipped there too.
INTERNAL_TYPES = frozenset({"note", "whisper", "barge"})


def envelope(type_: str, payload: dict[str, Any], source: str) -> dict[str, Any]:
    return {"type": type_, "payload": payload, "timestamp": int(time.time()), "source": source}


def encode(event: dict[str, Any]) -> str:
    """Compact JSON, text as UTF-8 (orjson: several times json.dumps' speed on the event
    path). JSON escapes newlines in strings, so the text is always one SSE data line."""
    return orjson.dumps(event).decode()


def sse_frame(data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {data}\n\n".encode()


def named_frame(event: str, data: dict[str, Any]) -> bytes:
    """A named SSE event (``event:``) with one line of compact JSON and no ``id:``: the frames
    of a response that is not a channel's events (a streamed bot reply: nothing to resume)."""
    return f"event: {event}\ndata: {encode(data)}\n\n".encode()


def http_chunk(frame: bytes) -> bytes:
    """``frame`` as one HTTP/1.1 chunk: made once per event, so that a stream's write is one
    ``transport.write`` of shared bytes, with no per-stream framing or copying."""
    return b"%x\r\n%b\r\n" % (len(frame), frame)


@dataclass(frozen=True, slots=True)
class Event:
    """A published event: its id, channel and envelope, with what every stream needs from it
    computed once: the id as a sortable key, the SSE frame, and the frame as an HTTP chunk."""

    id: str
    channel: str
    envelope: dict[str, Any]
    data: str
    key: tuple[int, int] = field(repr=False)
    frame: bytes = field(repr=False)
    chunk: bytes = field(repr=False)
    # One of INTERNAL_TYPES: decided once per event, so a customer's stream skips it with one
    # attribute read (the hot path: every event, every stream).
    internal: bool = False

    @classmethod
    def build(cls, event_id: str, channel: str, event: dict[str, Any], data: str) -> "Event":
        frame = sse_frame(data, event_id)
        internal = event["type"] in INTERNAL_TYPES
        return cls(event_id, channel, event, data, ids.parse(event_id), frame, http_chunk(frame), internal)

    @classmethod
    def ephemeral(cls, channel: str, event: dict[str, Any], data: str) -> "Event":
        """An event with no id (``typing``): its SSE frame has no ``id:`` line, so a client's
        Last-Event-ID never points at it, and its key sorts before every id, which is what a
        subscription tells it apart by (realtime.subscription)."""
        frame = sse_frame(data)
        return cls(EPHEMERAL_ID, channel, event, data, EPHEMERAL_KEY, frame, http_chunk(frame))


def validated(event: dict[str, Any]) -> str:
    """Check an event before publishing and return its wire encoding; raises ValidationError."""
    check_event(event)
    return encode(event)
