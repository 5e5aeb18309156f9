"""Event ids: ``<milliseconds>-<sequence>``, the format of Redis stream ids.

Both brokers use it so that a later history (Redis Streams, ring buffers) can resume from the
same ids, and so that ids from different channels of one stream compare sensibly.
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
    """Per-channel monotonic ids for the memory broker, with Redis' XADD rule."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def next(self, channel: str) -> str:
        now = int(time.time() * 1000)
        last_ms, last_seq = self._last.get(channel, (0, -1))
        ms, seq = (now, 0) if now > last_ms else (last_ms, last_seq + 1)
        self._last[channel] = (ms, seq)
        return f"{ms}-{seq}"

    def last(self, channel: str) -> str:
        ms, seq = self._last.get(channel, (0, 0))
        return f"{ms}-{seq}"
