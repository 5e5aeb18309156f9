"""The sweeper's walks of the Redis store's status indexes (app.domain.store.redis_store): the
sessions that entered a status before a time, and deleting closed ones past retention."""

import functools
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.domain.store import rules
from app.domain.store.base import Message, Session, Status, seq_at
from app.domain.store.redis_indexes import StatusIndexes, StoreKeys
from app.domain.store.redis_scripts import DELETE_CLOSED_SCRIPT
from realtime.redis_replies import as_text

# Index entries the sweeper reads per round trip.
SWEEP_BATCH = 500

# The store's _call: runs a Redis operation within its timeout (an outage: StoreUnavailable).
Call = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class IndexWalk:
    def __init__(
        self, redis: Redis | RedisCluster, keys: StoreKeys, indexes: StatusIndexes, *, in_script: bool
    ) -> None:
        """``in_script``: one Redis, whose scripts keep the indexes (not a cluster)."""
        self._redis = redis
        self.keys = keys
        self._indexes = indexes
        self._in_script = in_script
        self._delete_closed_script = redis.register_script(DELETE_CLOSED_SCRIPT)

    async def entered_before(
        self, call: Call, status: Status, unix_seconds: float, *, newest: bool = False
    ) -> tuple[list[tuple[str, Session, Message | None]], int]:
        """The sessions that entered ``status`` before ``unix_seconds`` and have it still,
        with their newest message if asked for; and how many index entries named sessions
        that are gone (expired), dropped on the way. One round trip per SWEEP_BATCH entries."""
        found: list[tuple[str, Session, Message | None]] = []
        gone = 0
        key, high = self.keys.status(status), seq_at(unix_seconds)

        async def batch(low: str) -> list[tuple[bytes, float]]:
            nonlocal gone
            entries = await self._indexes.entries(key, low, high, SWEEP_BATCH)
            names = [as_text(name) for name, _score in entries]
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.get(self.keys.session(name))
                    if newest:
                        pipe.lindex(self.keys.messages(name), -1)
                replies = iter(await pipe.execute())
            for name in names:
                raw, last = next(replies), next(replies) if newest else None
                if raw is None:
                    await self._indexes.leave(name, status)
                    gone += 1
                elif (session := cast(Session, rules.decode(raw)))["status"] == status:
                    found.append((name, session, rules.decode(last) if last else None))
            return entries

        low = "-inf"
        while len(entries := await call(functools.partial(batch, low))) == SWEEP_BATCH:
            low = f"({int(entries[-1][1])}"
        return found, gone

    async def delete_closed(self, name: str, session: Session) -> int:
        keys = self.keys.of_session(name)
        index = self.keys.status("closed") if self._in_script else keys[0]
        deleted = await self._delete_closed_script(keys=[*keys, index], args=[session["status_seq"], name])
        if not self._in_script:
            await self._indexes.leave(name, "closed")
        return int(deleted)
