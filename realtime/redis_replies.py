"""Reading what Redis answers: replies as text, and the errors that mean it cannot answer now."""

from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

DISCONNECTED = (RedisConnectionError, RedisTimeoutError, OSError)
# redis-py tears the pub/sub connection down under a task that is writing to it when the reader
# fails at the same moment; the writer then meets an AttributeError. Same meaning: connection lost.
CONNECTION_LOST = (*DISCONNECTED, AttributeError)
# A Redis Cluster answering that it (or a slot's owner) cannot serve now: a restarted primary
# says CLUSTERDOWN for its first seconds, and the whole cluster does once it has failed.
# Also AttributeError: redis-py closes every connection of a cluster client on such errors,
# under the requests still using them.
UNAVAILABLE = (*CONNECTION_LOST, ClusterDownError, TryAgainError, SlotNotCoveredError)


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value
