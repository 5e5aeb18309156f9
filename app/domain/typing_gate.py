"""At most one typing signal per sender per window (docs/api.md, "Typing"): what a sender sends
more often is accepted and dropped. On Redis one key per sender, ``typing:<name>:<who>[:<agent>]``,
set with NX and a lifetime of the window: across every process. In memory, per process."""

import logging
import time
from abc import ABC, abstractmethod

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from realtime.layout import namespace_prefix

logger = logging.getLogger(__name__)

TYPING_WINDOW = 2.0
# Senders a process remembers at most (then those whose window has passed are forgotten).
MAX_SENDERS = 10_000


def sender(session_name: str, who: str, agent_id: str | None) -> str:
    return f"{session_name}:{who}" + (f":{agent_id}" if agent_id is not None else "")


class TypingGate(ABC):
    @abstractmethod
    async def open(self, sender: str, window: float = TYPING_WINDOW) -> bool:
        """True if ``sender`` sent no typing signal in the last ``window`` seconds (and this one
        starts a new window); False: drop it."""


class MemoryTypingGate(TypingGate):
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def open(self, sender: str, window: float = TYPING_WINDOW) -> bool:
        now = time.monotonic()
        if self._until.get(sender, 0.0) > now:
            return False
        if len(self._until) >= MAX_SENDERS:
            self._until = {s: t for s, t in self._until.items() if t > now}
        self._until[sender] = now + window
        return True


class RedisTypingGate(TypingGate):
    def __init__(self, redis: Redis | RedisCluster, namespace: str = "") -> None:
        self._redis = redis
        self._prefix = namespace_prefix(namespace) + "typing:"

    async def open(self, sender: str, window: float = TYPING_WINDOW) -> bool:
        try:
            return bool(await self._redis.set(self._prefix + sender, "1", nx=True, px=int(window * 1000)))
        except RedisError as exc:  # best effort, as the signal itself: let it through
            logger.debug("typing gate unavailable, the signal goes: %r", exc)
            return True
