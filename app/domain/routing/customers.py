"""When each conversation's customer was last present (docs/routing.md, "Customer idle"): a
stream open on some process, a message, the start of the conversation. The router closes a
conversation whose customer has been away for --customer-idle.

On Redis it is one sorted set, ``customers_seen:{sse:workbench}`` (the session's name, scored
by when its customer was last seen, unix ms): every process serving the chatbot adds the
conversations whose customers it holds streams of, a scored ``ZADD GT`` (never back in time).
An entry leaves when the router has acted on it; the set expires with --customer-idle if
nothing writes it, and holds at most MAX_TRACKED entries (the oldest go first: closed by then).
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.domain.store.base import StoreUnavailable
from realtime.channels import WORKBENCH_TAG
from realtime.layout import namespace_prefix
from realtime.redis_replies import as_text

MAX_TRACKED = 1_000_000


class CustomerPresence(ABC):
    @abstractmethod
    async def seen(self, session_names: Sequence[str], now: float) -> None:
        """These conversations' customers are present at ``now`` (unix seconds)."""

    @abstractmethod
    async def away_since(self, before: float, limit: int) -> list[str]:
        """Up to ``limit`` conversations whose customers were last seen before ``before``."""

    @abstractmethod
    async def forget(self, session_names: Sequence[str]) -> None:
        """Stop tracking these (closed, or gone)."""


class MemoryCustomerPresence(CustomerPresence):
    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    async def seen(self, session_names: Sequence[str], now: float) -> None:
        for name in session_names:
            self._seen[name] = max(now, self._seen.get(name, 0.0))
        while len(self._seen) > MAX_TRACKED:
            del self._seen[min(self._seen, key=self._seen.__getitem__)]

    async def away_since(self, before: float, limit: int) -> list[str]:
        away = sorted((t, n) for n, t in self._seen.items() if t < before)
        return [n for _, n in away[:limit]]

    async def forget(self, session_names: Sequence[str]) -> None:
        for name in session_names:
            self._seen.pop(name, None)


class RedisCustomerPresence(CustomerPresence):
    def __init__(self, redis: Redis | RedisCluster, idle: float, namespace: str = "") -> None:
        self._redis = redis
        self._key = f"{namespace_prefix(namespace)}customers_seen:{{{WORKBENCH_TAG}}}"
        # The set outlives its newest entry by the idle time and a margin for the router.
        self._ttl_ms = int((idle + 3600) * 1000)

    async def seen(self, session_names: Sequence[str], now: float) -> None:
        if not session_names:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._key, dict.fromkeys(session_names, int(now * 1000)), gt=True)
                pipe.zremrangebyrank(self._key, 0, -MAX_TRACKED - 1)
                pipe.pexpire(self._key, self._ttl_ms)
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"customer presence unavailable: {exc!r}") from exc

    async def away_since(self, before: float, limit: int) -> list[str]:
        try:
            names: list[Any] = await self._redis.zrangebyscore(
                self._key, "-inf", f"({int(before * 1000)}", start=0, num=limit
            )
        except RedisError as exc:
            raise StoreUnavailable(f"customer presence unavailable: {exc!r}") from exc
        return [as_text(name) for name in names]

    async def forget(self, session_names: Sequence[str]) -> None:
        if session_names:
            try:
                await self._redis.zrem(self._key, *session_names)
            except RedisError as exc:
                raise StoreUnavailable(f"customer presence unavailable: {exc!r}") from exc
