"""What a pub/sub connection has asked of Redis: the channels it sent SUBSCRIBE for, the
confirmations Redis still owes (a future each, resolved by the reader, which joiners wait on),
and the SUNSUBSCRIBEs it sent, so that a cluster node unsubscribing a channel by itself (its
slot moved) is told apart from the confirmation of our own."""

import asyncio
from collections import Counter, deque
from collections.abc import Iterable

from realtime.errors import BrokerError


class SubscribedChannels:
    __slots__ = ("_leaving", "_live", "_pending")

    def __init__(self) -> None:
        # Channels we have sent SUBSCRIBE for, each with the future its confirmation resolves.
        self._live: dict[str, asyncio.Future[None]] = {}
        # Confirmations still owed by Redis, per channel, in the order SUBSCRIBEs were sent.
        self._pending: dict[str, deque[asyncio.Future[None]]] = {}
        # SUNSUBSCRIBEs sent, per channel, whose confirmations have not arrived yet.
        self._leaving: Counter[str] = Counter()

    def __contains__(self, channel: str) -> bool:
        return channel in self._live

    def __bool__(self) -> bool:
        return bool(self._live)

    def confirmations(self, channels: Iterable[str] | None = None) -> list[asyncio.Future[None]]:
        """The confirmations of ``channels`` (of every channel if None), owed or received."""
        if channels is None:
            return list(self._live.values())
        return [self._live[c] for c in channels if c in self._live]

    def expect(self, channels: Iterable[str]) -> None:
        """A SUBSCRIBE for ``channels`` is being sent: a confirmation is owed for each."""
        loop = asyncio.get_running_loop()
        for channel in channels:
            confirmation = loop.create_future()
            self._live[channel] = confirmation
            self._pending.setdefault(channel, deque()).append(confirmation)

    def discard(self, channel: str) -> None:
        """An UNSUBSCRIBE for ``channel`` is being sent."""
        del self._live[channel]

    def confirm(self, channel: str) -> None:
        pending = self._pending.get(channel)
        if not pending:
            return
        confirmation = pending.popleft()
        if not pending:
            del self._pending[channel]
        if not confirmation.done():
            confirmation.set_result(None)

    def forget(self, channel: str, exc: BaseException) -> None:
        """The SUBSCRIBE for ``channel`` failed: its waiters get the error."""
        confirmation = self._live.pop(channel, None)
        if confirmation is None:
            return
        pending = self._pending.get(channel)
        if pending is not None and confirmation in pending:
            pending.remove(confirmation)
        if not confirmation.done():
            confirmation.set_exception(BrokerError(f"subscribe to {channel} failed: {exc!r}"))
            confirmation.exception()  # retrieved: the waiter may already be gone

    def leaving(self, channels: Iterable[str]) -> None:
        """A SUNSUBSCRIBE for ``channels`` is being sent: their confirmations are ours."""
        self._leaving.update(channels)

    def dropped_by_server(self, channel: str) -> bool:
        """On a SUNSUBSCRIBE confirmation: whether it is Redis dropping a channel we hold
        (then forgotten here), not the confirmation of one we sent."""
        if self._leaving[channel] > 0:
            self._leaving[channel] -= 1
            if not self._leaving[channel]:
                del self._leaving[channel]
            return False
        if channel not in self._live:
            return False
        del self._live[channel]
        return True

    def release(self) -> None:
        """The connection is lost: waiters for confirmations go on (locally), and nothing is
        subscribed any more (the resync subscribes the channels again)."""
        for pending in self._pending.values():
            for confirmation in pending:
                if not confirmation.done():
                    confirmation.set_result(None)
        self.clear()

    def clear(self) -> None:
        self._pending.clear()
        self._leaving.clear()
        self._live.clear()
