"""One Redis, or one primary of a Redis Cluster, as this process uses it: the local fan-out of
the subscriptions whose channels live there, the pub/sub connection that feeds it, and the
event log on it.

It is what those subscriptions attach to (a ``Feed``). While its connection is down it answers
from this process alone rather than wait on Redis: positions from the newest id seen, no
history (a resume is then not recovered), subscriber counts from the local fan-out.
"""

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from realtime.event_log import RedisEventLog
from realtime.events import Event
from realtime.fanout import FanOut
from realtime.history import HISTORY_BYTES, History
from realtime.layout import Layout
from realtime.pubsub import PubSubConnection
from realtime.stats import BrokerStats
from realtime.subscription import Subscription


class RedisNode:
    __slots__ = ("connection", "fan_out", "log", "stats")

    def __init__(
        self,
        redis: Redis | RedisCluster,
        subscriber: Redis,
        layout: Layout,
        stats: BrokerStats,
        *,
        history_maxlen: int = 1000,
        history_ttl: float = 3600.0,
        history_bytes: int = HISTORY_BYTES,
        subscribe_timeout: float = 5.0,
        liveness_interval: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        """``redis`` runs commands and scripts (a cluster client routes them by key); the
        pub/sub connection comes from ``subscriber``, a plain client of the node."""
        self.stats = stats
        self.fan_out = FanOut(stats)
        self.log = RedisEventLog(
            redis, layout, history_maxlen=history_maxlen, history_ttl=history_ttl, history_bytes=history_bytes
        )
        self.connection = PubSubConnection(
            subscriber,
            self.log,
            self.fan_out,
            stats,
            subscribe_timeout=subscribe_timeout,
            liveness_interval=liveness_interval,
            max_backoff=max_backoff,
        )

    @property
    def available(self) -> bool:
        return self.connection.available

    def published(self, event_id: str, channel: str, event: dict[str, Any], data: str) -> str:
        """Count an event the log took (``log.append``: its errors are the broker's to judge,
        as local delivery on one Redis, the outbox on a cluster), and return its id.

        The script runs on the ordinary pool, so it is tried even while the pub/sub reader is
        reconnecting: an event accepted then is in the history (the catch-up delivers it to the
        other processes) and is handed to this process's subscribers directly."""
        self.stats.published[event["type"]] += 1
        if not self.available:
            # The reader is not back yet: the catch-up after it would deliver this too;
            # delivering it now is not a duplicate, subscriptions drop ids already seen.
            self.fan_out.deliver_matching(Event.build(event_id, channel, event, data))
        return event_id

    async def attach(self, subscription: Subscription) -> None:
        await self.connection.join(subscription)

    async def detach(self, subscription: Subscription) -> None:
        await self.connection.leave(subscription)

    async def position(self, channels: Iterable[str]) -> str:
        if self.available:
            return await self.log.position(channels)
        return self.log.clock.current

    async def history(self, channels: Iterable[str], after: str) -> History:
        if not self.available:
            return History([], complete=False)
        return await self.log.history(channels, after)

    async def last_event_id(self, channel: str) -> str | None:
        if not self.available:
            return None  # the history is in Redis: nothing to say while it is away
        return await self.log.last_event_id(channel)

    async def subscribed_processes(self, channel: str) -> int:
        if not self.available:
            return 1 if self.fan_out.subscribers(channel) else 0
        return await self.connection.subscribers(channel)
