"""The event log in memory: ids from one clock for all channels, and a history per channel.

History is a ring buffer per channel, like Redis' trimmed streams: the newest events within
``history_size`` events and ``history_bytes`` bytes, and channels idle for ``history_ttl``
seconds are forgotten.
"""

import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from realtime import ids
from realtime.channels import PATTERN_HISTORY_FACTOR, SESSION_PATTERN, SESSION_PREFIX, is_pattern
from realtime.events import Event
from realtime.history import HISTORY_BYTES, History, merge


@dataclass(slots=True)
class ChannelHistory:
    max_events: int
    max_bytes: int
    events: deque[Event] = field(default_factory=deque)
    size: int = 0
    # The newest id pushed out of the ring: a resume from before it is incomplete.
    trimmed: tuple[int, int] = (0, 0)
    touched: float = field(default_factory=time.monotonic)

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.size += len(event.frame)
        while len(self.events) > 1 and (len(self.events) > self.max_events or self.size > self.max_bytes):
            oldest = self.events.popleft()
            self.size -= len(oldest.frame)
            self.trimmed = oldest.key
        self.touched = time.monotonic()

    def after(self, key: tuple[int, int]) -> History:
        return History([e for e in self.events if e.key > key], self.trimmed <= key)


class MemoryEventLog:
    """Ids and histories of the events published in this process."""

    def __init__(
        self, *, history_size: int = 1000, history_ttl: float = 3600.0, history_bytes: int = HISTORY_BYTES
    ) -> None:
        self._clock = ids.IdClock()
        self._history_size = history_size
        self._history_bytes = history_bytes
        self._history_ttl = history_ttl
        self._started = time.monotonic()
        # Oldest-touched first, so forgetting idle channels only looks at the front.
        self._histories: OrderedDict[str, ChannelHistory] = OrderedDict()

    def append(self, channel: str, event: dict[str, Any], data: str) -> Event:
        """The event under the next id, recorded in the channel's history (and, for a
        session's event, in the history of the pattern that matches it, for resumes)."""
        item = Event.build(self._clock.next(), channel, event, data)
        self._record(item, item.channel)
        if item.channel.startswith(SESSION_PREFIX):
            self._record(item, SESSION_PATTERN)  # the pattern's own history, for resumes
        return item

    @property
    def position(self) -> str:
        return self._clock.current

    def last_event_id(self, channel: str) -> str | None:
        history = self._histories.get(channel)
        return history.events[-1].id if history is not None and history.events else None

    def history(self, channels: Iterable[str], after: str) -> History:
        self._forget_idle()
        channels = list(channels)
        key = ids.parse(after)
        found = [self._histories[c].after(key) for c in channels if c in self._histories]
        # A channel with no history: never published, or forgotten after being idle. Only the
        # second loses events, and only if ``after`` is older than the idle limit.
        idle_limit_ms = (time.time() - self._history_ttl) * 1000
        complete = all(h.complete for h in found) and (
            len(found) == len(set(channels)) or key[0] >= idle_limit_ms or self._young()
        )
        return History(merge(h.events for h in found), complete)

    def _young(self) -> bool:
        """Nothing can have been forgotten before the process was idle-limit old."""
        return time.monotonic() - self._started < self._history_ttl

    def _record(self, event: Event, key: str) -> None:
        history = self._histories.pop(key, None)
        if history is None:
            factor = PATTERN_HISTORY_FACTOR if is_pattern(key) else 1
            history = ChannelHistory(self._history_size * factor, self._history_bytes * factor)
        history.add(event)
        self._histories[key] = history  # moved to the newest end
        self._forget_idle()

    def _forget_idle(self) -> None:
        deadline = time.monotonic() - self._history_ttl
        while self._histories:
            channel, oldest = next(iter(self._histories.items()))
            if oldest.touched >= deadline:
                return
            del self._histories[channel]
