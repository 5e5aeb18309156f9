"""The registry of open SSE streams, so shutdown can end them promptly.

Without it aiohttp waits for every streaming handler up to shutdown_timeout (twice, in
practice) before exiting, and clients see a broken chunked body instead of a clean end.
"""

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from aiohttp_sse import EventSourceResponse

from realtime.broker import Subscription

logger = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class OpenStream:
    response: EventSourceResponse
    subscription: Subscription
    component: str


@dataclass(slots=True)
class StreamRegistry:
    _open: set[OpenStream] = field(default_factory=set)
    opened_total: int = 0

    def add(self, stream: OpenStream) -> None:
        self._open.add(stream)
        self.opened_total += 1

    def discard(self, stream: OpenStream) -> None:
        self._open.discard(stream)

    def __len__(self) -> int:
        return len(self._open)

    def by_component(self) -> dict[str, int]:
        return dict(Counter(stream.component for stream in self._open))

    async def close_all(self) -> None:
        """End every open stream and wait (briefly) for their handlers to finish writing."""
        streams = list(self._open)
        if not streams:
            return
        logger.info("ending %d open streams", len(streams))
        for stream in streams:
            stream.subscription.close()
            if stream.response.is_connected():
                stream.response.stop_streaming()
        await asyncio.gather(
            *(stream.response.wait() for stream in streams if stream.response.prepared),
            return_exceptions=True,
        )
