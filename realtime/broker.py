"""The broker interface and the per-process fan-out that both implementations share.

A broker moves events from publishers to the local subscriptions of a channel. Each
subscription owns a bounded queue: a consumer that falls behind is cut off (its iteration
raises :class:`SubscriptionOverflow`) instead of growing memory or slowing the others.
"""

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final, Self

from realtime.events import Event

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE: Final = 1000


class BrokerError(Exception):
    """The broker could not do what was asked (e.g. Redis unreachable)."""


class SubscriptionClosed(Exception):
    """The subscription ended: the broker closed, or the server is shutting down."""


class SubscriptionOverflow(SubscriptionClosed):
    """The subscriber did not keep up and its queue filled: it was cut off."""


_CLOSED: Final = object()


class Subscription:
    """A set of channels a consumer listens to; use it as ``async with`` then iterate.

    Leaving the ``async with`` block always releases the channels, whatever ended it.
    """

    def __init__(self, broker: "Broker", channels: tuple[str, ...], maxsize: int) -> None:
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        self.channels = channels
        self._broker = broker
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize + 1)  # +1: room for _CLOSED
        self._maxsize = maxsize
        self._active = False
        self._ended: type[SubscriptionClosed] | None = None

    @property
    def active(self) -> bool:
        return self._active

    async def __aenter__(self) -> Self:
        await self._broker._attach(self)
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        self._end(SubscriptionClosed)
        await self._broker._detach(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except SubscriptionOverflow:
            raise
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def get(self, timeout: float | None = None) -> Event | None:
        """Next event; None if ``timeout`` passes first. Raises SubscriptionClosed at the end."""
        if self._ended is not None and self._queue.empty():
            raise self._ended()
        if timeout is None:
            item = await self._queue.get()
        else:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                return None
        if item is _CLOSED:
            assert self._ended is not None
            raise self._ended()
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """End the iteration (server shutdown); events already queued are still delivered."""
        self._end(SubscriptionClosed)

    def deliver(self, event: Event) -> None:
        if self._ended is not None:
            return
        if self._queue.qsize() >= self._maxsize:
            self._overflow()
            return
        self._queue.put_nowait(event)

    def _overflow(self) -> None:
        logger.warning(
            "slow consumer cut off: %d events queued on %s", self._maxsize, ",".join(self.channels)
        )
        while not self._queue.empty():
            self._queue.get_nowait()
        self._broker.overflows += 1
        self._end(SubscriptionOverflow)

    def _end(self, reason: type[SubscriptionClosed]) -> None:
        if self._ended is None:
            self._ended = reason
            self._queue.put_nowait(_CLOSED)


class Broker(ABC):
    """publish / subscribe / close, plus the local fan-out both implementations share."""

    name: str

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._local: dict[str, set[Subscription]] = {}
        self.overflows = 0

    @abstractmethod
    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        """Validate and send ``event`` on ``channel``; return its id. Raises ValidationError."""

    @abstractmethod
    async def last_id(self, channels: Iterable[str]) -> str:
        """The id of the newest event published on any of ``channels`` ("0-0" if none)."""

    def subscribe(self, *channels: str) -> Subscription:
        return Subscription(self, tuple(dict.fromkeys(channels)), self._queue_size)

    async def close(self) -> None:
        """End every subscription; subclasses release their connections after this."""
        for subscriptions in list(self._local.values()):
            for subscription in list(subscriptions):
                subscription.close()

    def local_subscribers(self, channel: str) -> int:
        return len(self._local.get(channel, ()))

    @property
    def local_channels(self) -> int:
        return len(self._local)

    async def _attach(self, subscription: Subscription) -> None:
        self._add_local(subscription)

    async def _detach(self, subscription: Subscription) -> None:
        self._remove_local(subscription)

    def _add_local(self, subscription: Subscription) -> None:
        for channel in subscription.channels:
            self._local.setdefault(channel, set()).add(subscription)

    def _remove_local(self, subscription: Subscription) -> None:
        for channel in subscription.channels:
            subscribers = self._local.get(channel)
            if subscribers is None:
                continue
            subscribers.discard(subscription)
            if not subscribers:
                del self._local[channel]

    def _fan_out(self, event: Event) -> None:
        for subscription in tuple(self._local.get(event.channel, ())):
            subscription.deliver(event)
