"""The local fan-out: this process's subscriptions by channel (or pattern), and the delivery of
one event to all of them. Every broker has one (a cluster, one per node): whatever brings an
event in (the pub/sub reader, or a publish that stays in this process) hands it over here.

Delivery is the hot path: one lookup and one counter update per event, then one ``deliver``
call per subscription, and nothing else per stream.
"""

from fnmatch import fnmatchcase

from realtime.channels import is_pattern
from realtime.events import Event
from realtime.stats import BrokerStats
from realtime.subscription import Subscription


class FanOut:
    """Subscriptions by the channels (and patterns) they hold, each counted once per channel."""

    __slots__ = ("_patterns", "_stats", "_subscriptions")

    def __init__(self, stats: BrokerStats) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}  # by channel or pattern
        self._patterns: set[str] = set()  # the patterns among them
        self._stats = stats

    def add(self, subscription: Subscription) -> None:
        for channel in subscription.subscribed:
            self._subscriptions.setdefault(channel, set()).add(subscription)
            if is_pattern(channel):
                self._patterns.add(channel)

    def remove(self, subscription: Subscription) -> None:
        for channel in subscription.subscribed:
            subscribers = self._subscriptions.get(channel)
            if subscribers is None:
                continue
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[channel]
                self._patterns.discard(channel)

    def __contains__(self, channel: str) -> bool:
        """Whether ``channel`` (or pattern) has subscribers here."""
        return channel in self._subscriptions

    def __len__(self) -> int:
        """Channels and patterns with subscribers here."""
        return len(self._subscriptions)

    def channels(self) -> list[str]:
        return list(self._subscriptions)

    def subscribers(self, channel: str) -> int:
        return len(self._subscriptions.get(channel, ()))

    def subscriptions_of(self, channel: str) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions.get(channel, ()))

    def subscriptions(self) -> set[Subscription]:
        return {s for subscriptions in self._subscriptions.values() for s in subscriptions}

    def deliver(self, event: Event, to: str | None = None) -> None:
        """To the subscriptions of the event's channel, or of pattern ``to`` that it matched."""
        subscriptions = self._subscriptions.get(event.channel if to is None else to)
        if not subscriptions:
            return
        self._stats.fanned_out(event.envelope["type"], event.key[0], len(subscriptions))
        for subscription in tuple(subscriptions):
            subscription.deliver(event)

    def deliver_matching(self, event: Event) -> None:
        """Channel and pattern subscriptions alike, for events that do not come back through
        Redis, which matches patterns itself (memory broker; Redis away)."""
        self.deliver(event)
        for pattern in tuple(self._patterns):
            if fnmatchcase(event.channel, pattern):
                self.deliver(event, to=pattern)
