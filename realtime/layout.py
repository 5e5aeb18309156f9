"""Where a channel lives on Redis: its history stream, its clock and its pub/sub channel.

One Redis (``realtime.redis_broker.KeyLayout``) and a Redis Cluster
(``realtime.cluster_broker.ClusterLayout``) differ here: the event log and the pub/sub
connection take a layout and have no branch of their own for either.

A layout also holds the namespace (``--namespace``) that every key and wire channel carries, so
that deployments sharing one Redis keep apart: a Redis DB number separates keys, not pub/sub.
Logical channel names (what handlers and clients see) never carry it.
"""

from collections.abc import Iterable
from typing import Protocol

from schemas.fields import is_valid_name


def namespace_prefix(namespace: str) -> str:
    """What every key and wire channel of ``namespace`` begins with: ``NAME:``, or nothing for
    the default (empty) namespace. Settings validate the name; this refuses an unsafe one
    anyway (a ``*`` or a brace would change what a pattern matches or a key hashes to)."""
    if not namespace:
        return ""
    if not is_valid_name(namespace):
        raise ValueError(f"unsafe namespace: {namespace!r}")
    return namespace + ":"


class Layout(Protocol):
    # PUBLISH, or SPUBLISH for sharded pub/sub (the publish script runs it).
    publish_command: str
    # Sharded pub/sub (SSUBSCRIBE, PUBSUB SHARDNUMSUB): a node then unsubscribes a channel by
    # itself when the channel's slot moves to another node.
    sharded: bool
    # The clock of every channel, if they share one (one Redis): a reconnect moves it past the
    # ids this process has seen. None when every slot tag has its own (a cluster, where no ids
    # are made in this process while a shard is away, so there is nothing to move past).
    shared_clock_key: str | None

    def history_key(self, channel: str) -> str: ...

    def clock_key(self, channels: Iterable[str]) -> str:
        """The clock the ids of ``channels`` come from (they must share one)."""
        ...

    def pattern_history_key(self, channel: str) -> str | None:
        """The history of the pattern ``channel`` matches, written with it (so that a
        pattern subscription resumes like any other); None if it matches none."""
        ...

    def wire(self, channel: str) -> str:
        """The Redis pub/sub channel (or pattern) that carries ``channel`` (or pattern)."""
        ...

    def logical(self, wire: str) -> str:
        """The channel (or pattern) a Redis pub/sub channel (or pattern) carries."""
        ...
