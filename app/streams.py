"""The registry of open SSE streams, so shutdown can end them promptly.

Without it aiohttp waits for every streaming handler up to shutdown_timeout (twice, in
practice) before exiting, and clients see a broken chunked body instead of a clean end.
"""

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

    def close_all(self) -> None:
        """End every open stream: each handler sends a reconnection hint and returns."""
        if self._open:
            logger.info("ending %d open streams", len(self._open))
        for stream in self._open:
            stream.subscription.close()
