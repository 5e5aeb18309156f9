"""Choosing and opening the broker and session store: Redis when it answers, memory otherwise."""

import asyncio
import logging
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from app.settings import Settings
from app.store import MemorySessionStore, RedisSessionStore, SessionStore
from realtime.broker import Broker
from realtime.memory_broker import MemoryBroker
from realtime.redis_broker import RedisBroker

logger = logging.getLogger(__name__)

POOL_SIZE = 64


@dataclass(slots=True)
class Backends:
    broker: Broker
    store: SessionStore
    # Redis was configured but did not answer: serving from memory until it does.
    degraded: bool = False
    redis: Redis | None = None

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()
        if self.redis is not None:
            await self.redis.aclose()


def memory_backends(settings: Settings, *, degraded: bool = False) -> Backends:
    return Backends(MemoryBroker(queue_size=settings.queue_size), MemorySessionStore(), degraded)


def redis_client(settings: Settings) -> Redis:
    # A blocking pool makes a burst of requests wait for a connection instead of failing with
    # "Too many connections" (the original design's failure past ~100 streams).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        timeout=settings.redis_timeout,
        socket_connect_timeout=min(2.0, settings.redis_timeout),
        socket_timeout=settings.redis_timeout,
    )
    return Redis.from_pool(pool)


async def open_backends(settings: Settings) -> Backends:
    if not settings.use_redis:
        logger.info("broker and session store in memory (Redis switched off)")
        return memory_backends(settings)
    redis = redis_client(settings)
    broker = RedisBroker(redis, queue_size=settings.queue_size)
    try:
        async with asyncio.timeout(settings.redis_timeout):
            await redis.ping()
            await broker.start()
    except (RedisError, OSError, TimeoutError) as exc:
        await broker.close()
        await redis.aclose()
        logger.warning(
            "Redis at %s is unreachable (%s): serving from memory, degraded; "
            "events will not cross processes",
            _redacted(settings.redis_url), exc,
        )
        return memory_backends(settings, degraded=True)
    logger.info("broker and session store on Redis at %s", _redacted(settings.redis_url))
    return Backends(broker, RedisSessionStore(redis), redis=redis)


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
