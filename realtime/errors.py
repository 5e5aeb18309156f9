"""What can go wrong on the event path, as its callers see it: the broker could not do what was
asked, or a subscription ended (and how, so that the SSE writer can tell its client)."""


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
