"""The original design, kept only to be measured against: one Redis pub/sub connection, and
one reader task, per subscription.

It publishes exactly as RedisBroker does (same event log: same script, same history, same
ids), so the benchmark compares only the subscribing side. Each subscription gets a
connection of its own, made from the product's connection class (realtime.pubsub) over a
fan-out that holds only that subscription; the connections come from a pool of their own with
redis-py's default size, as the original design's did.
"""

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.broker import DEFAULT_QUEUE_SIZE, Broker, BrokerError, History, Subscription
from realtime.delivery_queue import RedisDeliveryQueue
from realtime.event_log import RedisEventLog
from realtime.event_script import EventKeys
from realtime.events import validated
from realtime.fanout import FanOut
from realtime.history import HISTORY_BYTES
from realtime.pubsub import PubSubConnection
from realtime.pubsub_wire import RedisPyPubSub
from realtime.redis_broker import KeyLayout
from realtime.redis_replies import DISCONNECTED, UNAVAILABLE
from realtime.scripted_events import ScriptedEvents
from realtime.subscription import Feed

logger = logging.getLogger(__name__)


class BaselineScriptedEvents(ScriptedEvents):
    """The baseline's events go out from the store's script as the product's do."""

    def __init__(self, broker: "PerStreamRedisBroker", keys: EventKeys) -> None:
        super().__init__(keys)
        self._broker = broker

    def _belongs(self, channel: str, home: str) -> bool:
        return True

    def _record(self, event_id: str, channel: str, event: dict[str, Any], data: str) -> None:
        self._broker.stats.published[event["type"]] += 1


class PerStreamRedisBroker(Broker):
    def __init__(
        self,
        redis: Redis,
        *,
        subscriber_url: str,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        history_maxlen: int = 1000,
        history_ttl: float = 3600.0,
        history_bytes: int = HISTORY_BYTES,
        subscribe_timeout: float = 5.0,
        namespace: str = "",
    ) -> None:
        super().__init__(queue_size=queue_size)
        self._redis = redis
        self._log = RedisEventLog(
            redis,
            KeyLayout(namespace),
            history_maxlen=history_maxlen,
            history_ttl=history_ttl,
            history_bytes=history_bytes,
        )
        self._scripted = BaselineScriptedEvents(self, self._log.keys)
        self._subscribe_timeout = subscribe_timeout
        self._subscriber_redis = Redis.from_url(subscriber_url)
        self._local = FanOut(self.stats)  # for close() and counting only: no shared fan-out
        self._own: dict[Subscription, PubSubConnection] = {}
        self._up = False

    @property
    def mode(self) -> str:
        return "redis" if self._up else "memory"

    @property
    def available(self) -> bool:
        """Redis answered at start (the baseline does not watch it after that)."""
        return self._up

    async def start(self, wait: float = 0.0) -> bool:
        try:
            async with asyncio.timeout(wait):
                await self._redis.ping()
        except (*DISCONNECTED, TimeoutError) as exc:
            logger.warning("Redis not reachable at start: %s", exc)
        else:
            self._up = True
        return self._up

    async def close(self) -> None:
        await super().close()
        for subscription in list(self._own):
            await self._release(subscription)
        await self._subscriber_redis.aclose()

    def delivery_queue(self, channel: str) -> RedisDeliveryQueue:
        return RedisDeliveryQueue(self._redis, self._log.layout.history_key(channel))

    def scripted_events(self) -> BaselineScriptedEvents:
        return self._scripted

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        data = validated(event)
        try:
            event_id = await self._log.append(channel, data)
        except (*UNAVAILABLE, RedisError) as exc:
            raise BrokerError(f"publish failed: {exc}") from exc
        self.stats.published[event["type"]] += 1
        return event_id

    async def position(self, channels: Iterable[str] = ()) -> str:
        return await self._log.position(channels)

    async def history(self, channels: Iterable[str], after: str) -> History:
        return await self._log.history(channels, after)

    async def last_event_id(self, channel: str) -> str | None:
        return await self._log.last_event_id(channel)

    async def attach(self, subscription: Subscription) -> None:
        """A connection of the subscription's own, live (its SUBSCRIBE confirmed) on return."""
        own = FanOut(self.stats)
        connection = PubSubConnection(
            self._subscriber_redis,
            self._log,
            own,
            self.stats,
            subscribe_timeout=self._subscribe_timeout,
            wire=RedisPyPubSub,  # the original design read through redis-py's PubSub
        )
        self._local.add(subscription)
        self._own[subscription] = connection
        try:
            if not await connection.start(wait=self._subscribe_timeout):
                raise BrokerError("subscribe failed: Redis not reachable")
            await connection.join(subscription)
        except BaseException:
            await self.detach(subscription)
            raise

    async def detach(self, subscription: Subscription) -> None:
        self._local.remove(subscription)
        await asyncio.shield(self._release(subscription))

    async def _release(self, subscription: Subscription) -> None:
        connection = self._own.pop(subscription, None)
        if connection is not None:
            await connection.close()

    def _feed(self, channels: tuple[str, ...]) -> Feed:
        return self

    def _fan_outs(self) -> tuple[FanOut]:
        return (self._local,)
