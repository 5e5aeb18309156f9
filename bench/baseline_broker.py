"""The original design, kept only to be measured against: one Redis pub/sub connection, and
one reader task, per subscription.

It publishes exactly as RedisBroker does (same script, same history, same ids), so the
benchmark compares only the subscribing side. Its per-stream connections come from a pool of
their own with redis-py's default size, as the original design's did.
"""

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from realtime.broker import BrokerError, Subscription
from realtime.redis_broker import DISCONNECTED, RedisBroker, as_text

logger = logging.getLogger(__name__)


class PerStreamRedisBroker(RedisBroker):
    name = "redis"

    def __init__(self, redis: Redis, *, subscriber_url: str, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._subscriber_redis = Redis.from_url(subscriber_url)
        self._own: dict[Subscription, tuple[PubSub, asyncio.Task[None]]] = {}

    async def close(self) -> None:
        for subscription in list(self._own):
            await self._release(subscription)
        await super().close()
        await self._subscriber_redis.aclose()

    async def _attach(self, subscription: Subscription) -> None:
        self._add_local(subscription)  # for close() and counting only: no shared fan-out
        pubsub = self._subscriber_redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*subscription.subscribed)
        except DISCONNECTED as exc:
            self._remove_local(subscription)
            await pubsub.aclose()
            raise BrokerError(f"subscribe failed: {exc!r}") from exc
        reader = asyncio.create_task(self._read(pubsub, subscription))
        self._own[subscription] = (pubsub, reader)

    async def _detach(self, subscription: Subscription) -> None:
        self._remove_local(subscription)
        await asyncio.shield(self._release(subscription))

    async def _release(self, subscription: Subscription) -> None:
        owned = self._own.pop(subscription, None)
        if owned is None:
            return
        pubsub, reader = owned
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await pubsub.aclose()

    def _fan_out(self, event: Any) -> None:
        """Events reach subscriptions through their own connections only (see _read); the
        shared connection of the parent class is not used for them."""

    async def _read(self, pubsub: PubSub, subscription: Subscription) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except DISCONNECTED as exc:
                logger.warning("baseline subscription lost: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if message is None or message["type"] != "message":
                continue
            event_id, _, data = as_text(message["data"]).partition(" ")
            event = self._decode(as_text(message["channel"]), event_id, data)
            if event is not None:
                subscription.deliver(event)
