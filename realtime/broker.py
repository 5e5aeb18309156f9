"""The broker interface: what handlers, backends and metrics know of a broker.

A broker moves events from publishers to the local subscriptions of a channel (see
realtime.subscription for how a subscription is filled, bounded and resumed). Its
implementations are built from the same parts: the local fan-out (realtime.fanout), an event
log (realtime.memory_log in memory; realtime.event_log on Redis) and, on Redis, the pub/sub
connection (realtime.pubsub). This module is also where callers import the errors, History and
Subscription that come with the interface.
"""

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from realtime.delivery_queue import DeliveryQueue
from realtime.errors import (
    BrokerError,
    ShardUnavailable,
    SubscriptionClosed,
    SubscriptionGap,
    SubscriptionOverflow,
)
from realtime.events import EPHEMERAL_TYPES, Event, envelope, validated
from realtime.fanout import FanOut
from realtime.history import History
from realtime.stats import BrokerStats
from realtime.subscription import Feed, Subscription

if TYPE_CHECKING:
    from realtime.scripted_events import ScriptedEvents

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "Broker",
    "BrokerError",
    "History",
    "ShardUnavailable",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionGap",
    "SubscriptionOverflow",
]

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE: Final = 1000


class Broker(ABC):
    """publish / subscribe / close, and what a process reports about its event path."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE, stats: BrokerStats | None = None) -> None:
        self._queue_size = queue_size
        self.stats = stats if stats is not None else BrokerStats()

    @property
    @abstractmethod
    def mode(self) -> str:
        """What carries events now: "redis", "redis-cluster", or "memory" (by choice, or while
        one Redis is away)."""

    @property
    def waiting(self) -> int | None:
        """Events accepted while their shard is away, waiting in an outbox to be published;
        None for a broker without an outbox."""
        return None

    @property
    def available(self) -> bool:
        """Whether events cross processes right now (always True for a local-only broker)."""
        return True

    def scripted_events(self) -> "ScriptedEvents | None":
        """How a session store publishes the events of a change in the script that commits it
        (realtime.scripted_events); None when events are published after the change (memory)."""
        return None

    @abstractmethod
    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        """Validate and send ``event`` on ``channel``; return its id. Raises ValidationError."""

    async def signal(self, channel: str, event: dict[str, Any]) -> None:
        """Send an ephemeral event (``typing``: realtime.events.EPHEMERAL_TYPES) to the streams
        open on ``channel`` now, on every process: no id, no history, never replayed. Best
        effort by design: if Redis cannot take it, this process's streams still get it, and
        no error reaches the caller (a lost ``typing`` costs nothing). Raises ValidationError
        for an event that is not one."""
        if event.get("type") not in EPHEMERAL_TYPES:
            raise ValueError(f"not an ephemeral event type: {event.get('type')!r}")
        data = validated(event)
        self.stats.published[event["type"]] += 1
        if not await self._signal(channel, data):
            self._deliver_here(Event.ephemeral(channel, event, data))

    def signal_here(self, channel: str, event: dict[str, Any]) -> None:
        """An ephemeral event for this process's streams of ``channel`` only (what each process
        works out for its own streams, such as a customer's place in the queue)."""
        if event.get("type") not in EPHEMERAL_TYPES:
            raise ValueError(f"not an ephemeral event type: {event.get('type')!r}")
        data = validated(event)
        self.stats.published[event["type"]] += 1
        self._deliver_here(Event.ephemeral(channel, event, data))

    async def _signal(self, channel: str, data: str) -> bool:
        """Publish an ephemeral event across processes; False if it reached none (memory, or
        Redis away): then this process delivers it itself."""
        return False

    def _deliver_here(self, event: Event) -> None:
        for fan_out in self._fan_outs():
            fan_out.deliver_matching(event)

    @abstractmethod
    def delivery_queue(self, channel: str) -> DeliveryQueue:
        """The readers' side of a delivery queue (realtime.channels.is_queue), whose entries
        a session store writes with its changes (or ``publish`` adds, in memory)."""

    @abstractmethod
    async def position(self, channels: Iterable[str] = ()) -> str:
        """The newest event id given out on ``channels`` ("0-0" if none). Ids come from one
        clock for all channels, except on a Redis Cluster: one clock per slot tag there, and
        the channels of one subscription always share a tag (see realtime.channels)."""

    @abstractmethod
    async def history(self, channels: Iterable[str], after: str) -> History:
        """Events of ``channels`` with ids after ``after``, oldest first, and whether the
        history still reached back to ``after`` on every channel."""

    async def subscribed_processes(self, channel: str) -> int:
        """How many processes hold subscriptions to ``channel`` (PUBSUB NUMSUB: Redis counts
        pub/sub connections, one per process); in memory, this process alone."""
        return 1 if self.local_subscribers(channel) else 0

    @abstractmethod
    async def last_event_id(self, channel: str) -> str | None:
        """The id of the newest event the channel's history holds, if any."""

    def subscribe(
        self,
        *channels: str,
        resume_from: str | None = None,
        presence: str | None = None,
        accepts: Callable[[Event], bool] | None = None,
        public_only: bool = False,
    ) -> Subscription:
        """``channels`` may be one pattern (``realtime.channels.SESSION_PATTERN``): every
        matching channel's events, resumable from the pattern's own history."""
        feed = self._feed(channels if presence is None else (*channels, presence))
        return Subscription(
            feed,
            tuple(dict.fromkeys(channels)),
            self._queue_size,
            resume_from=resume_from,
            presence=presence,
            accepts=accepts,
            public_only=public_only,
        )

    async def close(self) -> None:
        """End every subscription; subclasses release their connections after this."""
        for subscription in self._subscriptions():
            subscription.close()

    async def probe(self, channel: str, timeout: float) -> bool:
        """Whether an event published on ``channel`` comes back through this broker in time
        (the readiness check: it exercises the real publish and subscribe path)."""
        if not self.available:
            return False
        try:
            async with asyncio.timeout(timeout):
                async with self.subscribe(channel) as subscription:
                    event_id = await self.publish(channel, envelope("heartbeat", {}, "system"))
                    async for event in subscription:
                        if event.id == event_id:
                            return True
        except (TimeoutError, BrokerError, SubscriptionClosed):
            pass
        return False

    def local_subscribers(self, channel: str) -> int:
        return sum(fan_out.subscribers(channel) for fan_out in self._fan_outs())

    @property
    def local_channels(self) -> int:
        return sum(map(len, self._fan_outs()))

    def _subscriptions(self) -> set[Subscription]:
        return {s for fan_out in self._fan_outs() for s in fan_out.subscriptions()}

    @abstractmethod
    def _feed(self, channels: tuple[str, ...]) -> Feed:
        """What a subscription to ``channels`` attaches to and reads its history from."""

    @abstractmethod
    def _fan_outs(self) -> Iterable[FanOut]:
        """The fan-outs of this process's subscriptions (one, or one per cluster node)."""
