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


def render(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


MAX_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit integers


def is_event_id(value: str) -> bool:
    # A regex, not str.isdigit(): that accepts "²" and "①", which int() then refuses.
    if _ID.match(value) is None:
        return False
    ms, seq = parse(value)
    return ms <= MAX_PART and seq <= MAX_PART


class IdClock:
    """Ids made in this process, by the rule of the Redis publish script: max(now-0, last+1).

    The memory broker uses one for all its channels. The Redis broker uses one while Redis is
    away, fed with every id it sees from Redis (``observe``) and without the wall clock once it
    has seen one, so that its own ids stay just above Redis' and never run ahead of them on a
    host whose clock is fast.
    """

    def __init__(self, *, follow_time: bool = True) -> None:
        self._last = (0, 0)
        self._follow_time = follow_time

    @property
    def current(self) -> str:
        return render(self._last)

    def observe(self, key: tuple[int, int]) -> None:
        if key > self._last:
            self._last = key

    def next(self) -> str:
        ms, seq = self._last
        now = int(time.time() * 1000)
        if (self._follow_time or ms == 0) and now > ms:
            self._last = (now, 0)
        else:
            self._last = (ms, seq + 1)
        return render(self._last)
