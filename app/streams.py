"""The registry of open SSE streams, so shutdown can end them promptly.

Without it aiohttp waits for every streaming handler up to shutdown_timeout (twice, in
practice) before exiting, and clients see a broken chunked body instead of a clean end.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from realtime.broker import Subscription

if TYPE_CHECKING:
    from handlers.sse import FrameWriter

logger = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class OpenStream:
    frames: "FrameWriter"
    subscription: Subscription
    component: str


@dataclass(slots=True)
class StreamRegistry:
    """Open streams, and the places reserved for streams being opened.

    A place is reserved before the first await of a stream's opening, so a burst of requests
    cannot all pass the limits while none of them is registered yet.
    """

    _open: set[OpenStream] = field(default_factory=set)
    _places: int = 0
    _places_by_owner: Counter[str] = field(default_factory=Counter)
    opened_total: int = 0

    def reserve(self, owner: str | None, max_total: int, max_per_owner: int) -> str | None:
        """Take a place for a new stream; None if granted, else which limit refused it
        ("process" or "owner"). A granted place must be given back with ``release``."""
        if self._places >= max_total:
            return "process"
        if owner is not None and self._places_by_owner[owner] >= max_per_owner:
            return "owner"
        self._places += 1
        if owner is not None:
            self._places_by_owner[owner] += 1
        return None

    def release(self, owner: str | None) -> None:
        self._places -= 1
        if owner is not None:
            self._places_by_owner[owner] -= 1
            if not self._places_by_owner[owner]:
                del self._places_by_owner[owner]

    def add(self, stream: OpenStream) -> None:
        self._open.add(stream)
        self.opened_total += 1

    def discard(self, stream: OpenStream) -> None:
        self._open.discard(stream)

    def open_streams(self) -> list[OpenStream]:
        return list(self._open)

    def __len__(self) -> int:
        """Streams open or opening."""
        return self._places

    def by_component(self) -> dict[str, int]:
        return dict(Counter(stream.component for stream in self._open))

    def close_all(self) -> None:
        """End every open stream: each handler sends a reconnection hint and returns."""
        if self._open:
            logger.info("ending %d open streams", len(self._open))
        for stream in self._open:
            stream.subscription.close()
