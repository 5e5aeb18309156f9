"""How fast the queue is served, for the customer's wait estimate (docs/routing.md).

Each takeover of a waiting conversation is noted with its time; the rate is the number noted in
the last WINDOW over WINDOW. The estimate of a customer at position N is (N - 1/2) / rate,
rounded up to whole seconds: the time for the conversations ahead to be taken at the recent
pace, and half an interval until the next takeover. It says nothing (None) when fewer than MIN_SERVED were taken in the window (no pace to go
by) or when no agent is online (nobody to take it). On Redis the notes are one sorted set every
process writes, ``queue:served`` (a random member, the time as its score), trimmed to the window
and at most MAX_NOTES on each write, and expiring with the window.
"""

import math
import secrets
import time
from abc import ABC, abstractmethod
from collections import deque

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.domain.store.base import StoreUnavailable
from realtime.layout import namespace_prefix

WINDOW = 900.0  # seconds of takeovers the pace is taken from
MIN_SERVED = 3
MAX_NOTES = 10_000


def estimate(position: int, served: int, window: float, agents_online: int) -> int | None:
    """Seconds until the conversation at ``position`` is taken, at the pace of ``served``
    takeovers in ``window`` seconds; None when there is no pace or nobody online."""
    if served < MIN_SERVED or agents_online < 1:
        return None
    # The conversations ahead take an interval each; the next takeover comes half an interval
    # from now on average (the last one was that long ago, on average).
    return math.ceil((position - 0.5) * window / served)


class ServiceRate(ABC):
    @abstractmethod
    async def note(self, now: float) -> None:
        """A waiting conversation was taken over at ``now``."""

    @abstractmethod
    async def served(self, now: float) -> int:
        """How many were taken over in the WINDOW before ``now``."""


class MemoryServiceRate(ServiceRate):
    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=MAX_NOTES)

    async def note(self, now: float) -> None:
        self._times.append(now)

    async def served(self, now: float) -> int:
        while self._times and self._times[0] < now - WINDOW:
            self._times.popleft()
        return len(self._times)


class RedisServiceRate(ServiceRate):
    def __init__(self, redis: Redis | RedisCluster, namespace: str = "") -> None:
        self._redis = redis
        self._key = namespace_prefix(namespace) + "queue:served"

    async def note(self, now: float) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._key, {secrets.token_hex(8): now})
                pipe.zremrangebyscore(self._key, "-inf", now - WINDOW)
                pipe.zremrangebyrank(self._key, 0, -MAX_NOTES - 1)
                pipe.expire(self._key, int(WINDOW) + 60)
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"queue pace unavailable: {exc!r}") from exc

    async def served(self, now: float) -> int:
        try:
            return int(await self._redis.zcount(self._key, now - WINDOW, "+inf"))
        except RedisError as exc:
            raise StoreUnavailable(f"queue pace unavailable: {exc!r}") from exc


def now() -> float:
    return time.time()
