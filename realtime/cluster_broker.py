"""Redis Cluster broker: sharded pub/sub, so an event travels only to the shard that owns its
channel's slot instead of to every node (plain PUBLISH is broadcast over the cluster bus).

Each primary gets a RedisNode of its own (realtime.redis_node: a local fan-out, one pub/sub
connection to that node, SSUBSCRIBE, and the event log), all sharing the cluster client for
scripts and history reads; a subscription is handed to the node that owns its channels. The
keys of a channel (its history stream, its clock) carry the channel's slot tag in braces, so
that the publish script, which touches both and SPUBLISHes, runs on one shard. There is one
clock per tag, not one for the cluster: a single clock key would be one hot key on one shard
and could not be updated in the same script as a history on another. A stream only ever
combines channels of one tag (an agent's channel and the broadcast share theirs), so its ids
still strictly increase. All of that is ``ClusterLayout``: the nodes run the single-Redis code.

While a shard is away, its channels' events cannot get ids (they come from the shard's
clock), so there is no local-only delivery as on one Redis. A session's state and its events
share a shard, so a change to a session on a lost shard is refused (503) before anything is
written. What an accepted change must still publish on another slot waits in the session's
outbox in Redis (realtime.session_outbox) until it is out, so neither a shard that is away nor
a process that dies loses it; what the broker publishes itself waits for an away shard in a
bounded in-memory outbox (realtime.outbox), in order per tag. A slot that moves to another node ends
the streams on it, which then resume on the new owner (the history moves with the slot).
"""

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from realtime.broker import Broker, BrokerError, History, ShardUnavailable, Subscription
from realtime.channels import SESSION_PATTERN, SESSION_PREFIX, SESSIONS_FEED, is_queue, slot_tag
from realtime.cluster_pipes import ClusterPipes, owner_node
from realtime.delivery_queue import RedisDeliveryQueue
from realtime.event_script import EventKeys
from realtime.events import Event, validated
from realtime.fanout import FanOut
from realtime.layout import namespace_prefix
from realtime.outbox import Outbox
from realtime.redis_node import RedisNode
from realtime.redis_replies import DISCONNECTED, UNAVAILABLE
from realtime.scripted_events import Planned, ScriptedEvents, record_on
from realtime.session_outbox import SessionOutboxes
from realtime.subscription import Feed

logger = logging.getLogger(__name__)

SubscriberFactory = Callable[[str, int], Redis]
# Events waiting for their shard, in all: past this, publishes to a lost shard answer 503.
OUTBOX_LIMIT = 10_000
OUTBOX_RETRY = (0.1, 2.0)  # seconds between attempts: first, and at most (doubling)


class ClusterLayout:
    """Keys and wire channels named by slot tag: ``history:{tag}``, ``clock:{tag}``; sharded
    pub/sub, and one clock per tag. Under a namespace every name begins with ``NAME:``, and a
    wire channel always spells its tag out (``NAME:{tag}channel``): the prefix would otherwise
    change the slot a tagless channel hashes to."""

    __slots__ = ("_prefix",)
    sharded = True
    publish_command = "SPUBLISH"
    shared_clock_key: str | None = None

    def __init__(self, namespace: str = "") -> None:
        self._prefix = namespace_prefix(namespace)

    def history_key(self, channel: str) -> str:
        tag = slot_tag(channel)
        return f"{self._prefix}history:{{{tag}}}" + ("" if tag == channel else channel)

    def clock_key(self, channels: Iterable[str]) -> str:
        return f"{self._prefix}clock:{{{self.tag_of(channels)}}}"

    def wire(self, channel: str) -> str:
        # A channel that is its own tag hashes like "{channel}" already; the others need the
        # tag spelled out (SPUBLISH in the script must hash to the script's slot).
        tag = slot_tag(channel)
        if tag == channel and not self._prefix:
            return channel
        return f"{self._prefix}{{{tag}}}{channel}"

    def logical(self, wire: str) -> str:
        wire = wire.removeprefix(self._prefix)
        return wire.partition("}")[2] if wire.startswith("{") else wire

    def pattern_history_key(self, channel: str) -> str | None:
        return None  # no patterns in sharded pub/sub: the feed channel has its own history

    @staticmethod
    def tag_of(channels: Iterable[str]) -> str:
        tags = {slot_tag(channel) for channel in channels}
        if len(tags) != 1:
            raise ValueError(f"channels of one subscription must share a slot tag, not {sorted(tags)}")
        return tags.pop()


class ClusterScriptedEvents(ScriptedEvents):
    """On a cluster a script reaches only its own slot: the events of other slot tags (the
    broadcast and agent channels), and the feed copies of session events, go into the
    session's outbox in the script and are published from there (realtime.session_outbox)."""

    def __init__(self, broker: "ClusterBroker", keys: EventKeys, outboxes: SessionOutboxes) -> None:
        super().__init__(keys)
        self._broker = broker
        self._outboxes = outboxes

    def _belongs(self, channel: str, home: str) -> bool:
        return slot_tag(channel) == home

    def _planned(
        self, in_script: list[tuple[str, dict[str, Any], str]], elsewhere: list[tuple[str, str]], home: str
    ) -> Planned:
        own = [(channel, data) for channel, _, data in in_script]
        # The feed copies every session-prefixed channel's event: the session's own, and one on
        # another slot (the supervisors' channel, sse:session:.agents: a whisper, a barge).
        fed = [
            (SESSIONS_FEED, data)
            for channel, data in (*own, *elsewhere)
            if channel.startswith(SESSION_PREFIX)
        ]
        held = fed + elsewhere
        if not held:
            return Planned(in_script, self._keys.section(own), home)
        section = self._keys.section(own, (self._outboxes.outbox_key(home), held))
        return Planned(in_script, section, home, self._outboxes.pending_member(home))

    async def before(self, planned: Planned) -> None:
        if planned.pending:
            await self._outboxes.note_pending(planned.home, planned.pending)

    async def abandon(self, planned: Planned) -> None:
        if planned.pending:
            await self._outboxes.forget(planned.home, planned.pending)

    def _record(self, event_id: str, channel: str, event: dict[str, Any], data: str) -> None:
        record_on(self._broker._owner((channel,)), event_id, channel, event, data)

    async def _after(self, planned: Planned, held: Sequence[str]) -> None:
        if planned.pending:
            await self._outboxes.drained(planned.home, planned.pending, held)


class ClusterBroker(Broker):
    # No memory fallback: a cluster stays "redis-cluster" while a shard is away (``available``
    # and the app's ``degraded`` say that one is).
    mode = "redis-cluster"

    def __init__(
        self,
        cluster: RedisCluster,
        subscriber_factory: SubscriberFactory,
        *,
        queue_size: int,
        namespace: str = "",
        **node_options: Any,
    ) -> None:
        """``subscriber_factory(host, port)`` makes the plain client a node's pub/sub
        connection comes from; ``namespace`` prefixes every key and wire channel (see
        ClusterLayout); ``node_options`` go to every RedisNode."""
        super().__init__(queue_size=queue_size)
        self._cluster = cluster
        self._subscriber_factory = subscriber_factory
        self._node_options = node_options
        self._layout = ClusterLayout(namespace)
        self._nodes: dict[str, RedisNode] = {}
        self._subscribers: list[Redis] = []
        self._namespace = namespace
        self._outbox = Outbox(self._publish_now, limit=OUTBOX_LIMIT, retry=OUTBOX_RETRY)
        self._outboxes: SessionOutboxes | None = None
        self._pipes = ClusterPipes(cluster)
        self._scripted: ClusterScriptedEvents | None = None

    def scripted_events(self) -> ClusterScriptedEvents:
        if self._scripted is None:
            any_node = next(iter(self._nodes.values()), None)
            if any_node is None or self._outboxes is None:
                raise BrokerError("the cluster broker has not started")
            self._scripted = ClusterScriptedEvents(self, any_node.log.keys, self._outboxes)
        return self._scripted

    @property
    def waiting(self) -> int:
        return len(self._outbox) + (self._outboxes.waiting if self._outboxes is not None else 0)

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
            self._node(node.name, node.host, int(node.port))
        await asyncio.gather(*(node.connection.wait_available() for node in self._nodes.values()))
        if self._outboxes is None:
            any_node = next(iter(self._nodes.values()))
            self._outboxes = SessionOutboxes(
                self._cluster,
                self._pipes,
                self._publish_relayed,
                namespace=self._namespace,
                ttl_ms=any_node.log.keys.ttl_ms,
                retry=OUTBOX_RETRY,
                limit=OUTBOX_LIMIT,
            )
            self._outboxes.start()
        return self.available

    def _node(self, name: str, host: str, port: int) -> RedisNode:
        node = self._nodes.get(name)
        if node is None:
            subscriber = self._subscriber_factory(host, port)
            self._subscribers.append(subscriber)
            node = RedisNode(self._cluster, subscriber, self._layout, self.stats, **self._node_options)
            node.connection.start_reader()
            self._nodes[name] = node
            logger.info("sharded pub/sub on cluster node %s", name)
        return node

    def _owner(self, channels: Iterable[str]) -> RedisNode:
        """The node that owns the channels' slot (as the slot map says now)."""
        node = owner_node(self._cluster, self._layout.clock_key(channels))
        return self._node(node.name, node.host, int(node.port))

    def subscribe(
        self,
        *channels: str,
        resume_from: str | None = None,
        presence: str | None = None,
        accepts: Callable[[Event], bool] | None = None,
        public_only: bool = False,
    ) -> Subscription:
        if channels == (SESSION_PATTERN,):
            channels = (SESSIONS_FEED,)  # sharded pub/sub has no patterns: see publish
        return super().subscribe(
            *channels, resume_from=resume_from, presence=presence, accepts=accepts, public_only=public_only
        )

    def _feed(self, channels: tuple[str, ...]) -> Feed:
        return self._owner(channels)

    def _fan_outs(self) -> list[FanOut]:
        return [node.fan_out for node in self._nodes.values()]

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        """The event's id; "" when its shard is away and it waits in the outbox (accepted,
        published when the shard answers). A session's event also goes to the sessions
        feed, what a pattern subscription is on one Redis (with ids of the feed's clock)."""
        event_id = await self._publish_once(channel, event)
        if channel.startswith(SESSION_PREFIX):
            await self._publish_once(SESSIONS_FEED, event)
        return event_id

    def delivery_queue(self, channel: str) -> RedisDeliveryQueue:
        if not is_queue(channel):
            raise ValueError(f"not a delivery queue: {channel!r}")
        return RedisDeliveryQueue(self._cluster, self._layout.history_key(channel))

    async def _signal(self, channel: str, data: str) -> bool:
        """On the channel's shard only: the sessions feed does not carry ephemeral events."""
        try:
            await self._owner((channel,)).log.signal(channel, data)
        except (RedisError, *UNAVAILABLE) as exc:
            logger.debug("an ephemeral event on %s reached only this process: %r", channel, exc)
            return False
        return True

    async def _publish_once(self, channel: str, event: dict[str, Any]) -> str:
        if self._outbox.holds(channel):
            return self._defer(channel, event)  # behind what already waits for the shard
        try:
            return await self._publish_now(channel, event)
        except ShardUnavailable as exc:
            logger.warning("%s; the event waits for the shard", exc)
            return self._defer(channel, event)

    async def _publish_now(self, channel: str, event: dict[str, Any]) -> str:
        """Through the owner's event log; ShardUnavailable if the shard cannot take it: ids
        come from a clock per slot on the shard, so none can be made without it."""
        node = self._owner((channel,))
        data = validated(event)
        try:
            event_id = await node.log.append(channel, data)
        except UNAVAILABLE as exc:
            raise ShardUnavailable(f"publish failed: shard unavailable: {exc!r}") from exc
        except RedisError as exc:
            raise BrokerError(f"publish failed: {exc}") from exc
        return node.published(event_id, channel, event, data)

    async def _publish_relayed(self, channel: str, data: str, mark_key: str, entry_id: str) -> str | None:
        """An event from a session's outbox (realtime.session_outbox); None if it was out."""
        node = self._owner((channel,))
        try:
            event_id = await node.log.append_relayed(self._pipes, channel, data, mark_key, entry_id)
        except UNAVAILABLE as exc:
            raise ShardUnavailable(f"publish failed: shard unavailable: {exc!r}") from exc
        except RedisError as exc:
            raise BrokerError(f"publish failed: {exc}") from exc
        if event_id is None or is_queue(channel):
            return event_id  # a queue's entry is nobody's event: nothing to count or hand on
        return node.published(event_id, channel, orjson.loads(data), data)

    def _defer(self, channel: str, event: dict[str, Any]) -> str:
        validated(event)  # a bad event is refused now, not found out later
        self._outbox.add(channel, event)
        return ""

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

    async def close(self) -> None:
        if self._outboxes is not None:
            await self._outboxes.close()
        await self._outbox.close()
        await self._pipes.close()
        await super().close()
        await asyncio.gather(*(node.connection.close() for node in self._nodes.values()))
        for subscriber in self._subscribers:
            await subscriber.aclose()
