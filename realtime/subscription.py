"""A consumer's subscription to some channels: a bounded queue, filled from the live fan-out and
from the channels' history, or, while its consumer can take events at once, a write-through.

Each subscription owns a bounded queue: a consumer that falls behind is cut off (its iteration
raises :class:`SubscriptionOverflow`) instead of growing memory or slowing the others.

Event ids come from one clock for all channels, so a subscription keeps the id of the last
event it accepted and drops anything not newer. That one rule lets a subscription be filled
from two sources at once, the channel history and the live feed, without gaps or duplicates:
on a resume, after a Redis reconnect, or when a stream opens.

A subscription knows where its channels live only through :class:`Feed`, the few things it asks
of its broker (or, on a cluster, of the node that owns its channels).
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from realtime import ids
from realtime.errors import SubscriptionClosed, SubscriptionGap, SubscriptionOverflow
from realtime.events import Event
from realtime.history import History
from realtime.stats import BrokerStats

logger = logging.getLogger(__name__)


class Feed(Protocol):
    """What a subscription asks of the broker its channels live on."""

    @property
    def stats(self) -> BrokerStats:
        """The counters a subscription bumps (replays, gaps, slow consumers)."""
        ...

    async def attach(self, subscription: "Subscription") -> None:
        """Make the subscription live: from now on its channels' events reach ``deliver``."""

    async def detach(self, subscription: "Subscription") -> None:
        """Release the subscription's channels (even when the caller is being cancelled)."""

    async def position(self, channels: Iterable[str]) -> str:
        """The newest event id given out on ``channels``."""
        ...

    async def history(self, channels: Iterable[str], after: str) -> History:
        """The channels' events after ``after``, and whether the history reached back to it."""
        ...


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
        "_accepts",
        "_ended",
        "_feed",
        "_held",
        "_items",
        "_last",
        "_maxsize",
        "_public_only",
        "_replayed",
        "_resume_from",
        "_waiter",
        "_writer",
        "channels",
        "position",
        "recovered",
        "subscribed",
    )

    def __init__(
        self,
        feed: Feed,
        channels: tuple[str, ...],
        maxsize: int,
        resume_from: str | None = None,
        presence: str | None = None,
        accepts: Callable[[Event], bool] | None = None,
        public_only: bool = False,
    ) -> None:
        """``presence``: one more channel to hold a subscription on, silently (no events, no
        history, no position): its subscriber count across processes tells who is there.
        ``accepts``: a filter; events it refuses are skipped (history and live alike).
        ``public_only``: skip the agents' internal events (a customer's stream), the same way."""
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        self.channels = channels
        self.subscribed = channels if presence is None else (*channels, presence)
        self.position = ids.ZERO
        self.recovered = True
        self._resume_from = resume_from
        self._feed = feed
        # Usually nothing is queued (see write_through): None then, not an empty list kept per
        # stream; a list, not a deque, when something is (a deque allocates 64 slots at once).
        self._items: list[Event | _Replayed] | None = None
        self._replayed = 0  # _Replayed items in _items
        self._waiter: asyncio.Future[None] | None = None
        self._maxsize = maxsize
        self._ended: type[SubscriptionClosed] | None = None
        self._last = (0, 0)
        # While the start position or a history read is pending, live events wait here.
        self._held: list[Event] | None = None
        self._writer: Callable[[Event], bool] | None = None
        self._accepts = accepts
        self._public_only = public_only

    async def __aenter__(self) -> Self:
        self._held = []
        try:
            await self._feed.attach(self)
            try:
                await self._start()
            except BaseException:
                await self._feed.detach(self)
                raise
        finally:
            self._release_held()
        return self

    async def _start(self) -> None:
        current = await self._feed.position(self.channels)
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
        history = await self._feed.history(self.channels, resume)
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
            history = await self._feed.history(self.channels, after)
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
            self._feed.stats.gaps += 1
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
        await self._feed.detach(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            await self._wait(None)
        except (SubscriptionOverflow, SubscriptionGap):
            raise
        except SubscriptionClosed:
            raise StopAsyncIteration from None
        return self._pop()

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
        return self._pop()

    def _pop(self) -> Event:
        assert self._items
        item = self._items.pop(0)
        if isinstance(item, _Replayed):
            self._replayed -= 1
            return item.event
        return item

    async def batch(self) -> list[Event]:
        """Every queued event, oldest first, waiting for one if none is queued; raises like
        ``get`` at the end. A consumer that fell behind catches up in one write."""
        while (events := self.take()) is None:
            await self.arrival()
        return events

    def take(self) -> list[Event] | None:
        """Every queued event, oldest first, or None; raises like ``get`` at the end. With
        ``arrival``, ``batch`` without a suspended coroutine of its own: the SSE handler waits
        in its own frame, which is one frame (about 200 bytes) less per open stream."""
        if not self._items:
            if self._ended is not None:
                raise self._ended()
            return None
        items, self._items = self._items, None
        self._replayed = 0
        return [item.event if isinstance(item, _Replayed) else item for item in items]

    def arrival(self) -> "asyncio.Future[None]":
        """A future done once an event is queued or the subscription ends (for one consumer)."""
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

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
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
            if key[1] < 0:
                self._accept_ephemeral(event)  # no id: sorts first (realtime.events)
            return  # already queued (history and live overlap) or before the start position
        self._last = key
        if event.internal and self._public_only:
            return
        if self._accepts is not None and not self._accepts(event):
            return
        if replayed:
            self._feed.stats.replayed += 1
        if not self._items and self._writer is not None and self._writer(event):
            return
        if replayed:
            self._queue(_Replayed(event))
            self._replayed += 1
        elif len(self._items or ()) - self._replayed >= self._maxsize:
            self._overflow(event)
            return
        else:
            self._queue(event)
        self._wake()

    def _accept_ephemeral(self, event: Event) -> None:
        """A ``typing``: to the stream now, or dropped. It moves no position and never ends a
        stream: a full queue drops it rather than cutting off its consumer."""
        if self._accepts is not None and not self._accepts(event):
            return
        if not self._items and self._writer is not None and self._writer(event):
            return
        if len(self._items or ()) - self._replayed < self._maxsize:
            self._queue(event)
            self._wake()

    def _queue(self, item: "Event | _Replayed") -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)

    def _overflow(self, refused: Event) -> None:
        logger.warning(
            "slow consumer cut off: %d events queued on %s", self._maxsize, ",".join(self.channels)
        )
        stats = self._feed.stats
        for item in (*(self._items or ()), *(self._held or ()), refused):
            event = item.event if isinstance(item, _Replayed) else item
            stats.discarded[event.envelope["type"]] += 1
        self._items = None
        self._replayed = 0
        self._held = [] if self._held is not None else None
        stats.slow_consumers += 1
        self._end(SubscriptionOverflow)

    def _end(self, reason: type[SubscriptionClosed]) -> None:
        if self._ended is None:
            self._ended = reason
            self._wake()
