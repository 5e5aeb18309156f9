"""An ordered outbox: events accepted while the shard that owns their channel is away, kept in
order per slot tag and published, oldest first, once the shard answers again."""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from realtime.channels import slot_tag
from realtime.errors import BrokerError, ShardUnavailable

logger = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], Awaitable[str]]


class Outbox:
    """Bounded: past ``limit`` events in all, ``add`` refuses (the caller answers 503)."""

    def __init__(self, publish: Publish, *, limit: int, retry: tuple[float, float]) -> None:
        """``publish(channel, event)`` raises ShardUnavailable while the shard is away;
        ``retry``: seconds between attempts, first and at most (doubling)."""
        self._publish = publish
        self._limit = limit
        self._retry = retry
        # Per slot tag, the events waiting for the tag's shard, oldest first.
        self._waiting: dict[str, deque[tuple[str, dict[str, Any]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(map(len, self._waiting.values()))

    def holds(self, channel: str) -> bool:
        """Whether events of the channel's slot tag wait already: a new one goes behind them."""
        return slot_tag(channel) in self._waiting

    def add(self, channel: str, event: dict[str, Any]) -> None:
        if len(self) >= self._limit:
            raise ShardUnavailable(f"{self._limit} events already wait for their shards")
        self._waiting.setdefault(slot_tag(channel), deque()).append((channel, event))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="cluster-outbox")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._waiting:
            logger.error("closing with %d events still waiting for their shards: lost", len(self))

    async def _flush(self) -> None:
        """Publish what waits, oldest first per tag, retrying with backoff until it is out."""
        delay = self._retry[0]
        while self._waiting:
            published = 0
            for tag in list(self._waiting):
                queue = self._waiting[tag]
                while queue:
                    channel, event = queue[0]
                    try:
                        await self._publish(channel, event)
                    except ShardUnavailable:
                        break
                    except BrokerError as exc:
                        logger.error("dropped an event that waited for its shard on %s: %s", channel, exc)
                    else:
                        published += 1
                    queue.popleft()
                if not queue:
                    del self._waiting[tag]
            if published:
                logger.info("published %d events that waited for their shards", published)
                delay = self._retry[0]
            if self._waiting and not published:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry[1])
