"""Redis Cluster broker: sharded pub/sub, so an event travels only to the shard that owns its
channel's slot instead of to every node (plain PUBLISH is broadcast over the cluster bus).

Each primary gets a RedisBroker of its own, with one pub/sub connection to that node
(SSUBSCRIBE), sharing the cluster client for scripts and history reads; a subscription is
handed to the broker of the node that owns its channels. The keys of a channel (its history
stream, its clock) carry the channel's slot tag in braces, so that the publish script, which
touches both and SPUBLISHes, runs on one shard. There is one clock per tag, not one for the
cluster: a single clock key would be one hot key on one shard and could not be updated in the
same script as a history on another. A stream only ever combines channels of one tag (an
agent's channel and the broadcast share theirs), so its ids still strictly increase.

While a shard is away, its channels' events cannot get ids (they come from the shard's
clock), so there is no local-only delivery as on one Redis. A session's state and its events
share a shard, so a change to a session on a lost shard is refused (503) before anything is
written. What an accepted change must still publish on another shard that is away (the
broadcast and agent channels share one) waits in a bounded outbox, in order per tag, and is
published when the shard answers again. A slot that moves to another node ends the streams on
it, which then resume on the new owner (the history moves with the slot).
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from realtime.broker import Broker, BrokerError, History, ShardUnavailable, Subscription
from realtime.channels import SESSION_PATTERN, SESSION_PREFIX, SESSIONS_FEED, slot_tag
from realtime.events import Event, validated
from realtime.redis_broker import DISCONNECTED, KeyLayout, RedisBroker

logger = logging.getLogger(__name__)

SubscriberFactory = Callable[[str, int], Redis]
# Events waiting for their shard, in all: past this, publishes to a lost shard answer 503.
OUTBOX_LIMIT = 10_000
OUTBOX_RETRY = (0.1, 2.0)  # seconds between attempts: first, and at most (doubling)


class ClusterLayout(KeyLayout):
    """Keys and wire channels named by slot tag: ``history:{tag}``, ``clock:{tag}``."""

    sharded = True
    publish_command = "SPUBLISH"

    def history_key(self, channel: str) -> str:
        tag = slot_tag(channel)
        return f"history:{{{tag}}}" + ("" if tag == channel else channel)

    def clock_key(self, channels: Iterable[str]) -> str:
        return f"clock:{{{self.tag_of(channels)}}}"

    def wire(self, channel: str) -> str:
        # A channel that is its own tag hashes like "{channel}" already; the others need the
        # tag spelled out (SPUBLISH in the script must hash to the script's slot).
        tag = slot_tag(channel)
        return channel if tag == channel else f"{{{tag}}}{channel}"

    def logical(self, wire: str) -> str:
        return wire.partition("}")[2] if wire.startswith("{") else wire

    def pattern_history_key(self, channel: str) -> str | None:
        return None  # no patterns in sharded pub/sub: the feed channel has its own history

    @staticmethod
    def tag_of(channels: Iterable[str]) -> str:
        tags = {slot_tag(channel) for channel in channels}
        if len(tags) != 1:
            raise ValueError(f"channels of one subscription must share a slot tag, not {sorted(tags)}")
        return tags.pop()


class ClusterBroker(Broker):
    name = "redis-cluster"

    def __init__(
        self,
        cluster: RedisCluster,
        subscriber_factory: SubscriberFactory,
        *,
        queue_size: int,
        **node_options: Any,
    ) -> None:
        """``subscriber_factory(host, port)`` makes the plain client a node's pub/sub
        connection comes from; ``node_options`` go to every node's RedisBroker."""
        super().__init__(queue_size=queue_size)
        self._cluster = cluster
        self._subscriber_factory = subscriber_factory
        self._node_options = {"queue_size": queue_size, **node_options}
        self._layout = ClusterLayout()
        self._nodes: dict[str, RedisBroker] = {}
        self._subscribers: list[Redis] = []
        # Per slot tag, the events waiting for the tag's shard, oldest first.
        self._outbox: dict[str, deque[tuple[str, dict[str, Any]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return bool(self._nodes) and all(node.available for node in self._nodes.values())

    async def start(self, wait: float) -> bool:
        """Learn the slot map and connect to every primary. Unlike one Redis, a cluster that
        cannot be reached at start is an error: without its slot map nothing can be routed."""
        try:
            async with asyncio.timeout(wait):
                await self._cluster.initialize()
        except (RedisError, *DISCONNECTED, TimeoutError) as exc:
            raise BrokerError(f"Redis Cluster unreachable: {exc!r}") from exc
        for node in self._cluster.get_primaries():
            self._node_broker(node.name, node.host, node.port)
        await asyncio.gather(*(node.wait_available() for node in self._nodes.values()))
        return self.available

    def _node_broker(self, name: str, host: str, port: int) -> RedisBroker:
        broker = self._nodes.get(name)
        if broker is None:
            subscriber = self._subscriber_factory(host, port)
            self._subscribers.append(subscriber)
            broker = RedisBroker(
                self._cluster, layout=self._layout, subscriber=subscriber, stats=self.stats,
                **self._node_options,
            )
            broker.start_reader()
            self._nodes[name] = broker
            logger.info("sharded pub/sub on cluster node %s", name)
        return broker

    def _owner(self, channels: Iterable[str]) -> RedisBroker:
        """The broker of the node that owns the channels' slot (as the slot map says now)."""
        key = self._layout.clock_key(channels)
        try:
            node = self._cluster.get_node_from_key(key)
        except RedisError as exc:
            raise ShardUnavailable(f"no node owns the slot of {key}: {exc}") from exc
        return self._node_broker(node.name, node.host, node.port)

    def subscribe(
        self,
        *channels: str,
        resume_from: str | None = None,
        presence: str | None = None,
        accepts: Callable[[Event], bool] | None = None,
    ) -> Subscription:
        if channels == (SESSION_PATTERN,):
            channels = (SESSIONS_FEED,)  # sharded pub/sub has no patterns: see publish
        everything = channels if presence is None else (*channels, presence)
        return self._owner(everything).subscribe(
            *channels, resume_from=resume_from, presence=presence, accepts=accepts
        )

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        """The event's id; "" when its shard is away and it waits in the outbox (accepted,
        published when the shard answers). A session's event also goes to the sessions
        feed, what a pattern subscription is on one Redis (with ids of the feed's clock)."""
        event_id = await self._publish_once(channel, event)
        if channel.startswith(SESSION_PREFIX):
            await self._publish_once(SESSIONS_FEED, event)
        return event_id

    async def _publish_once(self, channel: str, event: dict[str, Any]) -> str:
        if slot_tag(channel) in self._outbox:
            return self._defer(channel, event)  # behind what already waits for the shard
        try:
            return await self._owner((channel,)).publish(channel, event)
        except ShardUnavailable as exc:
            logger.warning("%s; the event waits for the shard", exc)
            return self._defer(channel, event)

    @property
    def waiting(self) -> int:
        """Events in the outbox."""
        return sum(map(len, self._outbox.values()))

    def _defer(self, channel: str, event: dict[str, Any]) -> str:
        validated(event)  # a bad event is refused now, not found out later
        if self.waiting >= OUTBOX_LIMIT:
            raise ShardUnavailable(f"{OUTBOX_LIMIT} events already wait for their shards")
        self._outbox.setdefault(slot_tag(channel), deque()).append((channel, event))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="cluster-outbox")
        return ""

    async def _flush(self) -> None:
        """Publish what waits, oldest first per tag, retrying with backoff until it is out."""
        delay = OUTBOX_RETRY[0]
        while self._outbox:
            published = 0
            for tag in list(self._outbox):
                queue = self._outbox[tag]
                while queue:
                    channel, event = queue[0]
                    try:
                        await self._owner((channel,)).publish(channel, event)
                    except ShardUnavailable:
                        break
                    except BrokerError as exc:
                        logger.error("dropped an event that waited for its shard on %s: %s", channel, exc)
                    else:
                        published += 1
                    queue.popleft()
                if not queue:
                    del self._outbox[tag]
            if published:
                logger.info("published %d events that waited for their shards", published)
                delay = OUTBOX_RETRY[0]
            if self._outbox and not published:
                await asyncio.sleep(delay)
                delay = min(delay * 2, OUTBOX_RETRY[1])

    async def position(self, channels: Iterable[str] = ()) -> str:
        channels = tuple(channels)
        if not channels:
            raise ValueError("a cluster has a position per slot tag: name the channels")
        return await self._owner(channels).position(channels)

    async def subscribed_processes(self, channel: str) -> int:
        return await self._owner((channel,)).subscribed_processes(channel)

    async def last_event_id(self, channel: str) -> str | None:
        return await self._owner((channel,)).last_event_id(channel)

    async def history(self, channels: Iterable[str], after: str) -> History:
        channels = tuple(channels)
        return await self._owner(channels).history(channels, after)

    def local_subscribers(self, channel: str) -> int:
        return sum(node.local_subscribers(channel) for node in self._nodes.values())

    @property
    def local_channels(self) -> int:
        return sum(node.local_channels for node in self._nodes.values())

    def _subscriptions(self) -> set[Subscription]:
        return {s for node in self._nodes.values() for s in node._subscriptions()}

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._outbox:
            logger.error("closing with %d events still waiting for their shards: lost", self.waiting)
        await asyncio.gather(*(node.close() for node in self._nodes.values()))
        for subscriber in self._subscribers:
            await subscriber.aclose()
