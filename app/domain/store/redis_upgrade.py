"""Bringing the data of an earlier version up to the Redis store's layout
(``RedisSessionStore.upgrade``): status indexes were sets (now sorted sets by status_seq), and
sessions had no incarnation and no expiry."""

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from app.domain.store import rules
from app.domain.store.base import Bounds, Message, Session, seq_at
from app.domain.store.redis_indexes import StatusIndexes, StoreKeys, ms
from realtime.redis_replies import as_text

logger = logging.getLogger(__name__)

GetAll = Callable[[list[str]], Awaitable[list[bytes | None]]]
# Writes a session again (given the bytes it was read as), keys renewed for its status.
Rewrite = Callable[[str, bytes | str, Session], Awaitable[None]]


async def upgrade_indexes(
    redis: Redis | RedisCluster, keys: StoreKeys, bounds: Bounds, get_all: GetAll, rewrite: Rewrite
) -> int:
    """Each old session gets an incarnation (written through ``rewrite``) and its index entry a
    score of now plus its old number; returns how many sessions were rewritten."""
    touched = 0
    for status in ("bot_active", "waiting_agent", "agent_active", "closed"):
        key = keys.status(status)
        if as_text(await redis.type(key)) != "set":
            continue
        names = sorted(as_text(n) for n in await redis.smembers(key))
        raws = await get_all([keys.session(n) for n in names])
        base, scores = seq_at(time.time()), {}
        for name, raw in zip(names, raws, strict=True):
            if raw is None:
                continue
            session: Session = rules.decode(raw)
            if not session.get("incarnation"):
                session["incarnation"] = secrets.token_hex(8)
                await rewrite(name, raw, session)
                touched += 1
            if session["status"] == status:
                scores[name] = base + session["status_seq"]
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if scores:
                pipe.zadd(key, scores)
                pipe.pexpire(key, ms(bounds.ttl("bot_active")))
            await pipe.execute()
        logger.info("upgraded the %s index: %d sessions", status, len(scores))
    return touched


async def adopt_one(
    indexes: StatusIndexes,
    script: AsyncScript,
    keys: StoreKeys,
    bounds: Bounds,
    session: Session,
    messages: list[Message],
) -> bool:
    """Write a session (and its transcript) that Redis has no record of, with a fresh place in
    the queue order of this Redis; False if Redis knows it already (RedisSessionStore.adopt)."""
    name = session["session_name"]
    record: Session = {**session, "status_seq": await indexes.next_seq()}
    await indexes.enter(record)
    written = await script(
        keys=keys.of_session(name),
        args=[rules.encode(record), ms(bounds.ttl(record["status"])), *(rules.encode(m) for m in messages)],
    )
    if written:
        await indexes.after_commit(record)
    else:
        await indexes.leave(name, record["status"])
    return bool(written)
