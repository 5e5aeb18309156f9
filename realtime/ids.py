"""Event ids: ``<milliseconds>-<sequence>``, the format of Redis stream ids.

Ids come from one clock for all channels (a Redis key on Redis, one IdClock in memory), so a
stream that carries several channels still sees strictly increasing ids, and a history (Redis
Streams, ring buffers) can be resumed from one id across all of a stream's channels.
"""

import re
import time

ZERO = "0-0"
_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")


def parse(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def is_event_id(value: str) -> bool:
    # A regex, not str.isdigit(): that accepts "²" and "①", which int() then refuses.
    return _ID.match(value) is not None


def latest(ids: list[str]) -> str:
    return max(ids, key=parse, default=ZERO)


class IdClock:
    """One monotonic id sequence for all channels of the memory broker, so that the events of a
    stream carrying several channels have strictly increasing ids (as on Redis)."""

    def __init__(self) -> None:
        self._ms = 0
        self._seq = -1
        self._last: dict[str, str] = {}

    def next(self, channel: str) -> str:
        now = int(time.time() * 1000)
        if now > self._ms:
            self._ms, self._seq = now, 0
        else:
            self._seq += 1
        event_id = f"{self._ms}-{self._seq}"
        self._last[channel] = event_id
        return event_id

    def last(self, channel: str) -> str:
        return self._last.get(channel, ZERO)
