"""Session store on Redis: ``session:{name}`` (JSON), ``status:{status}`` (sets of names) and
``messages:{name}`` (a list capped at TRANSCRIPT_LIMIT), plus one counter,
``sessions:status_seq``, that orders the queue.

Every change is a WATCH/MULTI transaction around the pure rules of app.store.rules: of many
concurrent takeovers exactly one commits, the others retry, see the session held, and get 409.
Redis errors become StoreUnavailable (503) so a client never sees a 500 for an outage.
"""

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from app.store import rules
from realtime.redis_broker import as_text
from app.store.base import (
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

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ATTEMPTS = 64
STATUS_SEQ_KEY = "sessions:status_seq"


def session_key(name: str) -> str:
    return f"session:{name}"


def status_key(status: str) -> str:
    return f"status:{status}"


def messages_key(name: str) -> str:
    return f"messages:{name}"


class RedisSessionStore(SessionStore):
    name = "redis"

    def __init__(self, redis: Redis, *, timeout: float = 5.0) -> None:
        self._redis = redis
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
        async def create(pipe: Pipeline) -> tuple[Session, bool]:
            raw = await pipe.get(session_key(session_name))
            if raw is not None:
                return _decode(raw), False
            session = rules.new_session(session_name, await pipe.incr(STATUS_SEQ_KEY))
            pipe.multi()
            pipe.set(session_key(session_name), json.dumps(session))
            pipe.sadd(status_key(session["status"]), session_name)
            await pipe.execute()
            return session, True

        return await self._transaction(session_name, create)

    async def apply(
        self, session_name: str, action: Action, agent_id: str | None = None, reason: str | None = None
    ) -> Transition:
        async def transition(pipe: Pipeline) -> Transition:
            session = await self._load(pipe, session_name)
            moved = rules.apply(session, action, agent_id, reason)
            if moved is None:
                return Transition(session, session["status"], False)
            # Taken before MULTI (a retried transaction just skips a number): still increasing.
            moved["status_seq"] = await pipe.incr(STATUS_SEQ_KEY)
            pipe.multi()
            pipe.set(session_key(session_name), json.dumps(moved))
            if moved["status"] != session["status"]:
                pipe.srem(status_key(session["status"]), session_name)
                pipe.sadd(status_key(moved["status"]), session_name)
            await pipe.execute()
            return Transition(moved, session["status"], True)

        return await self._transaction(session_name, transition)

    async def add_message(
        self, session_name: str, role: Role, content: str, agent_id: str | None = None
    ) -> tuple[Session, Message]:
        message = rules.new_message(role, content, agent_id)

        async def append(pipe: Pipeline) -> tuple[Session, Message]:
            session = await self._load(pipe, session_name)
            rules.check_can_speak(session, role, agent_id)
            pipe.multi()
            pipe.rpush(messages_key(session_name), json.dumps(message))
            pipe.ltrim(messages_key(session_name), -TRANSCRIPT_LIMIT, -1)
            await pipe.execute()
            return session, message

        return await self._transaction(session_name, append)

    async def list_sessions(self, status: Status) -> list[Session]:
        names = await self._call(lambda: self._redis.smembers(status_key(status)))
        if not names:
            return []
        keys = [session_key(as_text(n)) for n in names]
        raws = await self._call(lambda: self._redis.mget(keys))
        sessions = [_decode(raw) for raw in raws if raw is not None]
        # The set and the session can only disagree for a moment between two transactions.
        return sorted((s for s in sessions if s["status"] == status), key=queue_order)

    async def messages(self, session_name: str) -> list[Message]:
        async def read() -> tuple[object, list[bytes]]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.exists(session_key(session_name))
                pipe.lrange(messages_key(session_name), 0, -1)
                exists, raws = await pipe.execute()
            return exists, raws

        exists, raws = await self._call(read)
        if not exists:
            raise SessionNotFound(session_name)
        return [json.loads(raw) for raw in raws]

    async def _load(self, pipe: Pipeline, session_name: str) -> Session:
        raw = await pipe.get(session_key(session_name))
        if raw is None:
            raise SessionNotFound(session_name)
        return _decode(raw)

    async def _transaction(self, session_name: str, body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``body`` under WATCH on the session key, retrying when another writer won."""

        async def attempt() -> T:
            for _ in range(MAX_ATTEMPTS):
                async with self._redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(session_key(session_name))
                        return await body(pipe)
                    except WatchError:
                        continue
            raise StoreUnavailable(f"session {session_name!r} is too contended; try again")

        return await self._call(attempt)

    async def adopt(self, records: list[tuple[Session, list[Message]]]) -> int:
        """Write sessions (with their transcripts) that Redis has no record of; sessions it
        already knows are left alone. Returns how many were written."""
        adopted = 0
        for session, messages in sorted(records, key=lambda r: r[0]["status_seq"]):
            written = await self._transaction(
                session["session_name"], functools.partial(_adopt, session, messages)
            )
            adopted += written
        return adopted

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


async def _adopt(session: Session, messages: list[Message], pipe: Pipeline) -> bool:
    name = session["session_name"]
    if await pipe.exists(session_key(name)):
        return False
    # A fresh place in the queue order of this Redis, in the order the sessions had.
    record = dict(session, status_seq=await pipe.incr(STATUS_SEQ_KEY))
    pipe.multi()
    pipe.set(session_key(name), json.dumps(record))
    pipe.sadd(status_key(record["status"]), name)
    pipe.delete(messages_key(name))
    if messages:
        pipe.rpush(messages_key(name), *(json.dumps(m) for m in messages))
    await pipe.execute()
    return True


def _decode(raw: bytes | str) -> Session:
    return json.loads(raw)  # type: ignore[no-any-return]
