"""What one try at a change on the Redis store gives back: the change committed (with the events
the broker still publishes after the script), or the session as another writer left it."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from realtime.scripted_events import Planned

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Conflict:
    """The session changed since it was read: what it is now (None: gone)."""

    current: bytes | str | None


@dataclass(frozen=True, slots=True)
class Committed(Generic[T]):
    """What a committed attempt gives back, and the events the broker still publishes."""

    result: T
    planned: Planned | None
    events_reply: list[str]  # publish_events: the ids, then a cluster outbox's entries
    stored: bytes | str | None  # the session as Redis has it now (None: unknown)
    wrote: bool = True  # False: decided from the session alone (nothing changed)


# One try at a change, given the session as it is (None: absent).
Attempt = Callable[[bytes | str | None], Awaitable[Committed[T] | Conflict]]
