"""Redis broker: one pub/sub connection per process, however many streams are open.

It is the parts of realtime.redis_node on one Redis (the local fan-out, the pub/sub connection
of realtime.pubsub, the event log of realtime.event_log), laid out with one clock for all
channels, plus what only one Redis has: delivery within this process while Redis is away.

Redis may be away, at start or for a while: the reader reconnects with capped, jittered
backoff; meanwhile publishes reach this process's own subscribers (under ids just above the
newest one seen), and new subscriptions are served locally. When the connection is back, every
channel with local subscribers is re-subscribed and every subscription is caught up from the
history, so a stream open across the outage misses nothing the history still holds (and is
ended, to resume with ``recovered: false``, if it does not).
"""

import logging
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.broker import DEFAULT_QUEUE_SIZE, Broker, BrokerError, History
from realtime.channels import SESSION_PATTERN, SESSION_PREFIX, is_queue
from realtime.delivery_queue import RedisDeliveryQueue
from realtime.events import Event, encode, validated
from realtime.fanout import FanOut
from realtime.history import HISTORY_BYTES
from realtime.layout import namespace_prefix
from realtime.redis_node import RedisNode
from realtime.redis_replies import CONNECTION_LOST, UNAVAILABLE
from realtime.scripted_events import OneRedisScriptedEvents
from realtime.stats import BrokerStats
from realtime.subscription import Feed

logger = logging.getLogger(__name__)

# The names of the default (empty) namespace; a namespace prefixes them (KeyLayout).
HISTORY_PREFIX = "history:"
CLOCK_KEY = "events:clock"


def history_key(channel: str) -> str:
    return HISTORY_PREFIX + channel


class KeyLayout:
    """Where a channel lives on one Redis: plain pub/sub, one history stream per channel and
    one clock for all channels (ids strictly increase across every channel); every key and
    wire channel (patterns included) under the namespace's prefix."""

    __slots__ = ("_prefix", "shared_clock_key")
    sharded = False
    publish_command = "PUBLISH"

    def __init__(self, namespace: str = "") -> None:
        self._prefix = namespace_prefix(namespace)
        self.shared_clock_key: str | None = self._prefix + CLOCK_KEY

    def history_key(self, channel: str) -> str:
        return self._prefix + history_key(channel)

    def clock_key(self, channels: Iterable[str]) -> str:
        return self._prefix + CLOCK_KEY

    def wire(self, channel: str) -> str:
        """The Redis pub/sub channel that carries ``channel``: a pattern under the prefix
        matches only the namespace's channels (names hold no ":" or "*")."""
        return self._prefix + channel

    def pattern_history_key(self, channel: str) -> str | None:
        """The history of the pattern ``channel`` matches, written with it (so that a
        pattern subscription resumes like any other); None if it matches none."""
        return self.history_key(SESSION_PATTERN) if channel.startswith(SESSION_PREFIX) else None

    def logical(self, wire: str) -> str:
        return wire.removeprefix(self._prefix)


class RedisBroker(Broker):
    def __init__(
        self,
        redis: Redis,
        *,
        history_maxlen: int = 1000,
        history_ttl: float = 3600.0,
        history_bytes: int = HISTORY_BYTES,
        subscribe_timeout: float = 5.0,
        liveness_interval: float = 5.0,
        max_backoff: float = 2.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        stats: BrokerStats | None = None,
        namespace: str = "",
    ) -> None:
        """``redis`` runs commands and scripts, and the pub/sub connection comes from it;
        ``namespace`` prefixes every key and wire channel (see realtime.layout)."""
        super().__init__(queue_size=queue_size, stats=stats)
        self._redis = redis
        self._node = RedisNode(
            redis,
            redis,
            KeyLayout(namespace),
            self.stats,
            history_maxlen=history_maxlen,
            history_ttl=history_ttl,
            history_bytes=history_bytes,
            subscribe_timeout=subscribe_timeout,
            liveness_interval=liveness_interval,
            max_backoff=max_backoff,
        )
        self._scripted = OneRedisScriptedEvents(self._node)
        # Publishes that reached only this process (Redis away): the readiness probe must
        # not take such an event's return for a working Redis.
        self._local_only_publishes = 0

    @property
    def mode(self) -> str:
        return "redis" if self.available else "memory"

    @property
    def available(self) -> bool:
        return self._node.available

    async def start(self, wait: float = 0.0) -> bool:
        """Start the reader; wait up to ``wait`` seconds for Redis. Returns whether it is up.

        The broker works without Redis (locally) and moves to Redis when it answers."""
        return await self._node.connection.start(wait)

    async def wait_available(self) -> None:
        await self._node.connection.wait_available()

    async def close(self) -> None:
        await super().close()
        await self._node.connection.close()

    def scripted_events(self) -> OneRedisScriptedEvents:
        return self._scripted

    def delivery_queue(self, channel: str) -> RedisDeliveryQueue:
        if not is_queue(channel):
            raise ValueError(f"not a delivery queue: {channel!r}")
        return RedisDeliveryQueue(self._redis, self._node.log.layout.history_key(channel))

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        """Into the history and out to every process; if Redis cannot take it, to this
        process's subscribers only."""
        if is_queue(channel):
            return await self._enqueue(channel, encode(event))
        data = validated(event)
        try:
            event_id = await self._node.log.append(channel, data)
        except CONNECTION_LOST as exc:
            logger.debug("publish on %s reached only this process: %s", channel, exc)
        except (*UNAVAILABLE, RedisError) as exc:
            raise BrokerError(f"publish failed: {exc}") from exc
        else:
            return self._node.published(event_id, channel, event, data)
        # Redis is away: this process's own subscribers still get the event.
        self._local_only_publishes += 1
        self.stats.published[event["type"]] += 1
        item = Event.build(self._node.log.clock.next(), channel, event, data)
        self._node.fan_out.deliver_matching(item)
        return item.id

    async def _enqueue(self, channel: str, data: str) -> str:
        """An entry of a delivery queue (a store without scripts: the startup fallback); lost,
        and logged, if Redis is away: a queue is read from Redis only."""
        try:
            return await self._node.log.append(channel, data)
        except (*CONNECTION_LOST, *UNAVAILABLE, RedisError) as exc:
            logger.warning("an entry of %s was lost, Redis is away: %r", channel, exc)
            return ""

    async def _signal(self, channel: str, data: str) -> bool:
        try:
            await self._node.log.signal(channel, data)
        except (RedisError, *CONNECTION_LOST, *UNAVAILABLE) as exc:
            logger.debug("an ephemeral event on %s reached only this process: %r", channel, exc)
            return False
        return True

    async def position(self, channels: Iterable[str] = ()) -> str:
        return await self._node.position(channels)

    async def history(self, channels: Iterable[str], after: str) -> History:
        return await self._node.history(channels, after)

    async def last_event_id(self, channel: str) -> str | None:
        return await self._node.last_event_id(channel)

    async def subscribed_processes(self, channel: str) -> int:
        return await self._node.subscribed_processes(channel)

    async def probe(self, channel: str, timeout: float) -> bool:
        # An event that came back only because Redis was away proves nothing about Redis.
        local_before = self._local_only_publishes
        try:
            delivered = await super().probe(channel, timeout)
        except (RedisError, *CONNECTION_LOST) as exc:
            logger.debug("readiness probe failed: %r", exc)
            return False
        return delivered and self._local_only_publishes == local_before

    def _feed(self, channels: tuple[str, ...]) -> Feed:
        return self._node

    def _fan_outs(self) -> tuple[FanOut]:
        return (self._node.fan_out,)
