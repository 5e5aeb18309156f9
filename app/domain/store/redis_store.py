"""Session store on Redis: ``session:{name}`` (JSON) and ``messages:{name}`` (a list capped at
TRANSCRIPT_LIMIT), in one hash slot per session (the braces are a Redis Cluster hash tag);
``status:<status>`` sets index the sessions by status, and one counter,
``sessions:status_seq``, orders the queue.

Every change reads the session, applies the pure rules of app.domain.store.rules, and commits with a
compare-and-set script: the write happens only if the session is still what was read. Of many
concurrent takeovers exactly one commits, the others read again, see the session held, and
get 409. A script, not WATCH/MULTI: it runs on one shard of a cluster as on one Redis, and
costs one round trip.

The status index lives on other slots than the sessions, so it cannot change in the same
step. A name is added to its new status set before the commit and again after it, and only
then removed from the old one, which is put back if the session has meanwhile returned to
that status; an add for a commit that lost its race is taken back the same way. So a status
set never misses a session that has its status (every removal is followed by a check, every
commit by an add), may name one that has just moved on, and readers check each session's own
status.
"""

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.domain.store import rules
from app.domain.store.base import (
    TRANSCRIPT_LIMIT,
    Action,
    Message,
    Role,
    Session,
    SessionExists,
    SessionNotFound,
    SessionStore,
    Status,
    StoreUnavailable,
    Transition,
    queue_order,
)
from realtime.redis_replies import as_text

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ATTEMPTS = 64
STATUS_SEQ_KEY = "sessions:status_seq"

# KEYS: session, messages. ARGV: the session as read ("" = absent), the session to write
# ("" = unchanged), a message to append ("" = none), the transcript limit. 1 if written.
COMPARE_AND_SET_SCRIPT = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
end
return 1
"""

# KEYS: session, messages. ARGV: the session, then its messages. Writes only a session Redis
# does not have (with its transcript); 1 if written.
ADOPT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
for i = 2, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
return 1
"""


def session_key(name: str) -> str:
    return f"session:{{{name}}}"


def status_key(status: str) -> str:
    return f"status:{status}"


def messages_key(name: str) -> str:
    return f"messages:{{{name}}}"


class RedisSessionStore(SessionStore):
    name = "redis"

    def __init__(self, redis: Redis | RedisCluster, *, timeout: float = 5.0) -> None:
        self._redis = redis
        self._compare_and_set = redis.register_script(COMPARE_AND_SET_SCRIPT)
        self._adopt_script = redis.register_script(ADOPT_SCRIPT)
        self._timeout = timeout
        self._down = False  # so that an outage is logged once, not once per request

    async def create(self, session_name: str) -> Session:
        session, created = await self.get_or_create(session_name)
        if not created:
            raise SessionExists(session_name)
        return session

    async def get(self, session_name: str) -> Session:
        raw = await self._call(lambda: self._redis.get(session_key(session_name)))
        if raw is None:
            raise SessionNotFound(session_name)
        return _decode(raw)

    async def get_or_create(self, session_name: str) -> tuple[Session, bool]:
        async def create() -> tuple[Session, bool] | None:
            raw = await self._redis.get(session_key(session_name))
            if raw is not None:
                return _decode(raw), False
            session = rules.new_session(session_name, await self._redis.incr(STATUS_SEQ_KEY))
            await self._redis.sadd(status_key(session["status"]), session_name)
            if await self._commit(session_name, None, session):
                await self._after_commit(session_name, session["status"])
                return session, True
            await self._leave_status(session_name, session["status"])
            return None  # created by somebody else meanwhile: read it

        return await self._retrying(session_name, create)

    async def apply(
        self, session_name: str, action: Action, agent_id: str | None = None, reason: str | None = None
    ) -> Transition:
        async def transition() -> Transition | None:
            raw, session = await self._load(session_name)
            moved = rules.apply(session, action, agent_id, reason)
            if moved is None:
                return Transition(session, session["status"], False)
            # Taken before the commit (a retry just skips a number): still increasing.
            moved["status_seq"] = await self._redis.incr(STATUS_SEQ_KEY)
            before, after = session["status"], moved["status"]
            if after == before:
                return (
                    Transition(moved, before, True) if await self._commit(session_name, raw, moved) else None
                )
            await self._redis.sadd(status_key(after), session_name)
            if not await self._commit(session_name, raw, moved):
                await self._leave_status(session_name, after)  # lost the race: take it back
                return None
            await self._after_commit(session_name, after, before)
            return Transition(moved, before, True)

        return await self._retrying(session_name, transition)

    async def add_message(
        self, session_name: str, role: Role, content: str, agent_id: str | None = None
    ) -> tuple[Session, Message]:
        message = rules.new_message(role, content, agent_id)

        async def append() -> tuple[Session, Message] | None:
            raw, session = await self._load(session_name)
            rules.check_can_speak(session, role, agent_id)
            if not await self._commit(session_name, raw, None, message):
                return None  # the session changed (taken over?): check again
            return session, message

        return await self._retrying(session_name, append)

    async def list_sessions(self, status: Status) -> list[Session]:
        names = await self._call(lambda: self._redis.smembers(status_key(status)))
        if not names:
            return []
        raws = await self._call(lambda: self._get_all([session_key(as_text(n)) for n in names]))
        sessions = [_decode(raw) for raw in raws if raw is not None]
        return sorted((s for s in sessions if s["status"] == status), key=queue_order)

    async def messages(self, session_name: str) -> list[Message]:
        async def read() -> tuple[int, list[bytes]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(session_key(session_name))
                pipe.lrange(messages_key(session_name), 0, -1)
                exists, raws = await pipe.execute()
            return exists, raws

        exists, raws = await self._call(read)
        if not exists:
            raise SessionNotFound(session_name)
        return [json.loads(raw) for raw in raws]

    async def _get_all(self, keys: list[str]) -> list[bytes | None]:
        """GET of many sessions; a pipeline, not MGET, whose keys must share a slot on a
        cluster."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return await pipe.execute()

    async def _load(self, session_name: str) -> tuple[bytes | str, Session]:
        raw = await self._redis.get(session_key(session_name))
        if raw is None:
            raise SessionNotFound(session_name)
        return raw, _decode(raw)

    async def _commit(
        self,
        session_name: str,
        read: bytes | str | None,
        session: Session | None,
        message: Message | None = None,
    ) -> bool:
        """Write ``session`` and/or append ``message`` if the session is still ``read``."""
        written = await self._compare_and_set(
            keys=[session_key(session_name), messages_key(session_name)],
            args=[
                read if read is not None else "",
                json.dumps(session) if session is not None else "",
                json.dumps(message) if message is not None else "",
                TRANSCRIPT_LIMIT,
            ],
        )
        return bool(written)

    async def _after_commit(self, session_name: str, status: str, left: str | None = None) -> None:
        """The index work after a commit: add the name to its status again (undoing a racing
        removal) and drop it from the status it ``left``. The change is made by then, so a
        failure here (a cluster shard away) is logged, not answered 503: the worst it leaves
        is a status set naming a session that has moved on, which readers skip."""
        try:
            await self._redis.sadd(status_key(status), session_name)
            if left is not None:
                await self._leave_status(session_name, left)
        except RedisError as exc:
            logger.warning("status index of %r not updated after its change: %r", session_name, exc)

    async def _leave_status(self, session_name: str, status: str) -> None:
        """Drop the name from a status set; put it back if the session has that status now
        (a mover added it before our removal and committed before our check)."""
        await self._redis.srem(status_key(status), session_name)
        raw = await self._redis.get(session_key(session_name))
        if raw is not None and _decode(raw)["status"] == status:
            await self._redis.sadd(status_key(status), session_name)

    async def _retrying(self, session_name: str, attempt: Callable[[], Awaitable[T | None]]) -> T:
        """Run ``attempt`` until it commits (returns a value), reading afresh each time another
        writer won (it returned None)."""

        async def attempts() -> T:
            for _ in range(MAX_ATTEMPTS):
                result = await attempt()
                if result is not None:
                    return result
            raise StoreUnavailable(f"session {session_name!r} is too contended; try again")

        return await self._call(attempts)

    async def adopt(self, records: list[tuple[Session, list[Message]]]) -> int:
        """Write sessions (with their transcripts) that Redis has no record of; sessions it
        already knows are left alone. Returns how many were written."""
        adopted = 0
        for session, messages in sorted(records, key=lambda r: r[0]["status_seq"]):
            adopted += await self._call(functools.partial(self._adopt, session, messages))
        return adopted

    async def _adopt(self, session: Session, messages: list[Message]) -> bool:
        name = session["session_name"]
        # A fresh place in the queue order of this Redis, in the order the sessions had.
        record: Session = {**session, "status_seq": await self._redis.incr(STATUS_SEQ_KEY)}
        await self._redis.sadd(status_key(record["status"]), name)
        written = await self._adopt_script(
            keys=[session_key(name), messages_key(name)],
            args=[json.dumps(record), *(json.dumps(m) for m in messages)],
        )
        if written:
            await self._after_commit(name, record["status"])
        else:
            await self._leave_status(name, record["status"])
        return bool(written)

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis operation; an outage becomes StoreUnavailable (503) within the timeout,
        however many reconnect attempts redis-py would make."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation()
        except (RedisError, TimeoutError) as exc:
            if self._down:
                logger.debug("session store still unavailable: %r", exc)
            else:
                self._down = True
                logger.warning("session store unavailable (answering 503): %r", exc)
            raise StoreUnavailable(str(exc) or "timed out") from exc
        if self._down:
            self._down = False
            logger.info("session store available again")
        return result


def _decode(raw: bytes | str) -> Session:
    session: Session = json.loads(raw)  # written by this store, in this shape
    return session
