"""The Redis store's key names, and its status indexes: sorted sets of names by status, scored
by ``status_seq``, the queue order. On one Redis the action script keeps them (redis_scripts);
on a Redis Cluster they live on other slots than the sessions and are kept around each commit
(see app/domain/store/redis_store.py): added before and after, removed after, put back when a
racing mover has returned the session to that status."""

import logging
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.domain.store import rules
from app.domain.store.base import Bounds, Session, Status
from app.domain.store.redis_scripts import NEXT_SEQ_SCRIPT
from realtime.layout import namespace_prefix
from realtime.redis_replies import as_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The store's key names, under a namespace (``--namespace``: deployments sharing one
    Redis keep apart). A session's keys share its hash tag, the session name."""

    namespace: str = ""

    def _prefixed(self, key: str) -> str:
        return namespace_prefix(self.namespace) + key

    def session(self, name: str) -> str:
        return self._prefixed(f"session:{{{name}}}")

    def messages(self, name: str) -> str:
        return self._prefixed(f"messages:{{{name}}}")

    def transcript_size(self, name: str) -> str:
        return self._prefixed(f"messages_size:{{{name}}}")

    def bot_leases(self, name: str) -> str:
        return self._prefixed(f"bot_leases:{{{name}}}")

    def of_session(self, name: str) -> list[str]:
        return [self.session(name), self.messages(name), self.transcript_size(name)]

    def status(self, status: str) -> str:
        return self._prefixed(f"status:{status}")

    @property
    def status_seq(self) -> str:
        return self._prefixed("sessions:status_seq")


def ms(seconds: float) -> int:
    """A lifetime in whole milliseconds, at least one (PX and PEXPIRE refuse 0)."""
    return max(1, int(seconds * 1000))


class StatusIndexes:
    def __init__(self, redis: Redis | RedisCluster, keys: StoreKeys, bounds: Bounds) -> None:
        self._redis = redis
        self._keys = keys
        self._bounds = bounds
        self._next_seq_script = redis.register_script(NEXT_SEQ_SCRIPT)

    async def entries(
        self, key: str, low: str | int, high: str | int, limit: int
    ) -> list[tuple[bytes, float]]:
        """Up to ``limit`` entries of a status index, with their scores, from ``low`` up."""
        entries = await self._redis.zrangebyscore(key, low, high, start=0, num=limit, withscores=True)
        return cast(list[tuple[bytes, float]], entries)  # withscores: (member, score) pairs

    async def next_seq(self, front_of: Status | None = None) -> int:
        """The next queue number; the clock lives as long as the sessions it numbered. With
        ``front_of``: one before the first of that status's queue, if it has one."""
        if front_of is not None:
            head = await self._redis.zrange(self._keys.status(front_of), 0, 0, withscores=True)
            if head:
                return int(head[0][1]) - 1
        ttl = ms(self._bounds.ttl("bot_active"))
        return int(as_text(await self._next_seq_script(keys=[self._keys.status_seq], args=[ttl])))

    async def enter(self, session: Session) -> None:
        """Index ``session`` under its status; the index lives as long as its newest entry."""
        key = self._keys.status(session["status"])
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {session["session_name"]: session["status_seq"]})
            pipe.pexpire(key, ms(self._bounds.ttl("bot_active")))
            await pipe.execute()

    async def after_commit(self, session: Session, left: Status | None = None) -> None:
        """The index work after a commit: index the session under its status again (undoing
        a racing removal) and drop it from the status it ``left``. The change is made by
        then, so a failure here (a cluster shard away) is logged, not answered 503: the worst
        it leaves is an index entry naming a session that has moved on, which readers skip."""
        name = session["session_name"]
        try:
            await self.enter(session)
            if left is not None and left != session["status"]:
                await self.leave(name, left)
        except RedisError as exc:
            logger.warning("status index of %r not updated after its change: %r", name, exc)

    async def leave(self, session_name: str, status: str) -> None:
        """Drop the name from a status index; put it back if the session has that status now
        (a mover added it before our removal and committed before our check)."""
        await self._redis.zrem(self._keys.status(status), session_name)
        raw = await self._redis.get(self._keys.session(session_name))
        if raw is not None and (session := cast(Session, rules.decode(raw)))["status"] == status:
            await self.enter(session)
