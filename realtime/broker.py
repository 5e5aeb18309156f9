"""The broker interface and the per-process fan-out that both implementations share.

A broker moves events from publishers to the local subscriptions of a channel. Each
subscription owns a bounded queue: a consumer that falls behind is cut off (its iteration
raises :class:`SubscriptionOverflow`) instead of growing memory or slowing the others.

Event ids come from one clock for all channels, so a subscription keeps the id of the last
event it accepted and drops anything not newer. That one rule lets a subscription be filled
from two sources at once, the channel history and the live feed, without gaps or duplicates:
on a resume, after a Redis reconnect, or when a stream opens.
"""

import asyncio
import logging
from abc import ABC, abstractmethod
from fnmatch import fnmatchcase
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from realtime import ids
from realtime.channels import is_pattern
from realtime.events import Event, envelope
from realtime.stats import BrokerStats

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE: Final = 1000


class BrokerError(Exception):
    """The broker could not do what was asked (e.g. Redis unreachable)."""


class ShardUnavailable(BrokerError):
    """The Redis Cluster shard that owns the channel cannot be reached."""


class SubscriptionClosed(Exception):
    """The subscription ended: the broker closed, or the server is shutting down."""


class SubscriptionOverflow(SubscriptionClosed):
    """The subscriber did not keep up and its queue filled: it was cut off."""


class SubscriptionGap(SubscriptionClosed):
    """Events were missed and the history no longer holds them (after a long outage): the
    consumer must reconnect, and will be told ``recovered: false``."""


@dataclass(frozen=True, slots=True)
class History:
    """Events after a position, oldest first; ``complete`` is False when some were lost."""

    events: list[Event]
    complete: bool


@dataclass(frozen=True, slots=True)
class _Replayed:
    """An event queued from the history: it does not count against the live bound, which is
    there to cut off consumers that fall behind, not clients that were away."""

    event: Event


class Subscription:
    """A set of channels a consumer listens to; use it as ``async with`` then iterate.

    Entering makes the subscription live, fixes its start ``position`` (the id to resume
    from, or the newest id when not resuming) and queues the history after a resumed
    position; ``recovered`` says whether that history was complete. Leaving the ``async
    with`` block always releases the channels, whatever ended it.

    A consumer that can take an event without waiting (an SSE connection whose socket buffer
    has room) may ``write_through``: events then go straight to it from the fan-out, with no
    queue, future or task switch per event per stream, and only queue while it cannot.
    """

    __slots__ = (
        "channels", "subscribed", "position", "recovered", "_resume_from", "_broker", "_items", "_replayed",
        "_waiter", "_maxsize", "_ended", "_last", "_held", "_writer", "_accepts",
    )

    def __init__(
        self,
        broker: "Broker",
        channels: tuple[str, ...],
        maxsize: int,
        resume_from: str | None = None,
        presence: str | None = None,
        accepts: Callable[[Event], bool] | None = None,
    ) -> None:
        """``presence``: one more channel to hold a subscription on, silently (no events, no
        history, no position): its subscriber count across processes tells who is there.
        ``accepts``: a filter; events it refuses are skipped (history and live alike)."""
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        self.channels = channels
        self.subscribed = channels if presence is None else (*channels, presence)
        self.position = ids.ZERO
        self.recovered = True
        self._resume_from = resume_from
        self._broker = broker
        # A list, not a deque: usually empty (see write_through), and an empty list costs no
        # item storage where a deque allocates a block of 64 slots up front.
        self._items: list[Event | _Replayed] = []
        self._replayed = 0  # _Replayed items in _items
        self._waiter: asyncio.Future[None] | None = None
        self._maxsize = maxsize
        self._ended: type[SubscriptionClosed] | None = None
        self._last = (0, 0)
        # While the start position or a history read is pending, live events wait here.
        self._held: list[Event] | None = None
        self._writer: Callable[[Event], bool] | None = None
        self._accepts = accepts

    async def __aenter__(self) -> Self:
        self._held = []
        try:
            await self._broker._attach(self)
            try:
                await self._start()
            except BaseException:
                await self._broker._detach(self)
                raise
        finally:
            self._release_held()
        return self

    async def _start(self) -> None:
        current = await self._broker.position(self.channels)
        resume = self._resume_from
        if resume is None:
            self.position = current
            self._last = ids.parse(current)
            return
        if not ids.is_event_id(resume) or ids.parse(resume) > ids.parse(current):
            # Not an id this broker gave out (or from a Redis that lost its data): start now.
            self.position, self.recovered = current, False
            self._last = ids.parse(current)
            return
        self.position = resume
        self._last = ids.parse(resume)
        history = await self._broker.history(self.channels, resume)
        self.recovered = history.complete
        for event in history.events:
            self._accept(event, replayed=True)

    async def catch_up(self) -> None:
        """Queue what the channels' history holds after the last accepted event (after a
        Redis reconnect); end the subscription with SubscriptionGap if some of it is lost."""
        if self._ended is not None or self._held is not None:
            return
        self._held = []
        try:
            after = ids.render(self._last)
            history = await self._broker.history(self.channels, after)
            for event in history.events:
                self._accept(event, replayed=True)
        finally:
            self._release_held()
        if not history.complete:
            logger.warning("events lost on %s: ending the stream", ",".join(self.channels))
            self.end_with_gap()

    def end_with_gap(self) -> None:
        """End the subscription so that its consumer reconnects and resumes."""
        if self._ended is None:
            self._broker.stats.gaps += 1
        self._end(SubscriptionGap)

    def _release_held(self) -> None:
        held, self._held = self._held, None
        for event in held or ():
            self._accept(event)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._writer = None
        self._end(SubscriptionClosed)
        await self._broker._detach(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except (SubscriptionOverflow, SubscriptionGap):
            raise
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    def write_through(self, writer: Callable[[Event], bool] | None) -> None:
        """From now on, hand each event to ``writer`` when nothing is queued before it; the
        writer returns False when it cannot take the event without waiting, and the event is
        queued instead (so order holds: nothing is written past a queued event). The writer
        must not raise. None switches it off."""
        self._writer = writer

    async def get(self, timeout: float | None = None) -> Event | None:
        """Next event; None if ``timeout`` passes first. Raises SubscriptionClosed at the end
        (after the events already queued, except for an overflow, which drops them)."""
        if not await self._wait(timeout):
            return None
        item = self._items.pop(0)
        if isinstance(item, _Replayed):
            self._replayed -= 1
            return item.event
        return item

    async def batch(self) -> list[Event]:
        """Every queued event, oldest first, waiting for one if none is queued; raises like
        ``get`` at the end. A consumer that fell behind catches up in one write."""
        while not self._items:  # not self._wait(): one suspended frame less per open stream
            if self._ended is not None:
                raise self._ended()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items, self._items = self._items, []
        self._replayed = 0
        return [item.event if isinstance(item, _Replayed) else item for item in items]

    async def _wait(self, timeout: float | None) -> bool:
        while not self._items:
            if self._ended is not None:
                raise self._ended()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if timeout is None:
                    await self._waiter
                else:
                    async with asyncio.timeout(timeout):
                        await self._waiter
            except TimeoutError:
                return False
            finally:
                self._waiter = None
        return True

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """End the iteration (server shutdown); events already queued are still delivered."""
        self._end(SubscriptionClosed)

    def deliver(self, event: Event) -> None:
        if self._held is not None:
            if len(self._held) >= self._maxsize:
                self._overflow(event)
            else:
                self._held.append(event)
            return
        self._accept(event)

    def _accept(self, event: Event, *, replayed: bool = False) -> None:
        if self._ended is not None:
            return
        key = event.key
        if key <= self._last:
            return  # already queued (history and live overlap) or before the start position
        self._last = key
        if self._accepts is not None and not self._accepts(event):
            return
        if replayed:
            self._broker.stats.replayed += 1
        if not self._items and self._writer is not None and self._writer(event):
            return
        if replayed:
            self._items.append(_Replayed(event))
            self._replayed += 1
        elif len(self._items) - self._replayed >= self._maxsize:
            self._overflow(event)
            return
        else:
            self._items.append(event)
        self._wake()

    def _overflow(self, refused: Event) -> None:
        logger.warning(
            "slow consumer cut off: %d events queued on %s", self._maxsize, ",".join(self.channels)
        )
        stats = self._broker.stats
        for item in (*self._items, *(self._held or ()), refused):
            event = item.event if isinstance(item, _Replayed) else item
            stats.discarded[event.envelope["type"]] += 1
        self._items = []
        self._replayed = 0
        self._held = [] if self._held is not None else None
        self._broker.stats.slow_consumers += 1
        self._end(SubscriptionOverflow)

    def _end(self, reason: type[SubscriptionClosed]) -> None:
        if self._ended is None:
            self._ended = reason
            self._wake()


class Broker(ABC):
    """publish / subscribe / close, plus the local fan-out both implementations share."""

    name: str

    def __init__(
        self, *, queue_size: int = DEFAULT_QUEUE_SIZE, stats: BrokerStats | None = None
    ) -> None:
        self._queue_size = queue_size
        self._local: dict[str, set[Subscription]] = {}  # by channel or pattern
        self._patterns: set[str] = set()  # the patterns among them
        self.stats = stats if stats is not None else BrokerStats()

    @property
    def mode(self) -> str:
        """What carries events now: "redis", "redis-cluster", or "memory" (by choice, or while
        one Redis is away)."""
        return self.name

    @property
    def waiting(self) -> int | None:
        """Events accepted while their shard is away, waiting in an outbox to be published;
        None for a broker without an outbox."""
        return None

    @property
    def available(self) -> bool:
        """Whether events cross processes right now (always True for a local-only broker)."""
        return True

    @abstractmethod
    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        """Validate and send ``event`` on ``channel``; return its id. Raises ValidationError."""

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
    ) -> Subscription:
        """``channels`` may be one pattern (``realtime.channels.SESSION_PATTERN``): every
        matching channel's events, resumable from the pattern's own history."""
        return Subscription(
            self, tuple(dict.fromkeys(channels)), self._queue_size,
            resume_from=resume_from, presence=presence, accepts=accepts,
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
        return len(self._local.get(channel, ()))

    @property
    def local_channels(self) -> int:
        return len(self._local)

    def _subscriptions(self) -> set[Subscription]:
        return {s for subscriptions in self._local.values() for s in subscriptions}

    async def _attach(self, subscription: Subscription) -> None:
        self._add_local(subscription)

    async def _detach(self, subscription: Subscription) -> None:
        self._remove_local(subscription)

    def _add_local(self, subscription: Subscription) -> None:
        for channel in subscription.subscribed:
            self._local.setdefault(channel, set()).add(subscription)
            if is_pattern(channel):
                self._patterns.add(channel)

    def _remove_local(self, subscription: Subscription) -> None:
        for channel in subscription.subscribed:
            subscribers = self._local.get(channel)
            if subscribers is None:
                continue
            subscribers.discard(subscription)
            if not subscribers:
                del self._local[channel]
                self._patterns.discard(channel)

    def _fan_out(self, event: Event, to: str | None = None) -> None:
        """To the subscriptions of the event's channel, or of pattern ``to`` that it matched."""
        subscriptions = self._local.get(event.channel if to is None else to)
        if not subscriptions:
            return
        self.stats.fanned_out(event.envelope["type"], event.key[0], len(subscriptions))
        for subscription in tuple(subscriptions):
            subscription.deliver(event)

    def _fan_out_here(self, event: Event) -> None:
        """Channel and pattern subscriptions of this process, for events that do not come
        back through Redis (memory broker; Redis away)."""
        self._fan_out(event)
        for pattern in tuple(self._patterns):
            if fnmatchcase(event.channel, pattern):
                self._fan_out(event, to=pattern)


def merge(per_channel: Iterable[list[Event]]) -> list[Event]:
    """One oldest-first list from several channels' histories (ids are globally ordered)."""
    return sorted((e for events in per_channel for e in events), key=lambda e: e.key)
