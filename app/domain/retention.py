"""The sweeper: closes bot conversations idle past ``--idle-ttl`` and deletes closed ones past
``--retention`` (docs/security.md, "Bounds").

Every process sweeps on its own timer; running it twice at once is harmless (a close is a
compare-and-set that one sweeper wins, deleting is idempotent), so there is no lock to lose
with a process. Closes are announced like an agent's, from the source ``system``."""

import asyncio
import functools
import logging
import time
from dataclasses import dataclass

from app.domain.announcements import of_transition
from app.domain.store import SessionStore, StoreUnavailable
from app.domain.store.base import Bounds
from realtime.broker import BrokerError

logger = logging.getLogger(__name__)

# A sweeper's close, announced like an agent's, from the source ``system``.
ANNOUNCE_CLOSE = functools.partial(of_transition, action="close", source="system")
ANNOUNCE_CLOSE_WITH_WEBHOOKS = functools.partial(
    of_transition, action="close", source="system", webhooks=True
)

# The longest pause between sweeps; shorter when the bounds are short (tests, demos).
MAX_INTERVAL = 60.0
MIN_INTERVAL = 0.2


def sweep_interval(bounds: Bounds) -> float:
    """A quarter of the shortest bound, within [MIN_INTERVAL, MAX_INTERVAL]: a session is
    closed or deleted at most that late."""
    return max(MIN_INTERVAL, min(MAX_INTERVAL, bounds.idle_ttl / 4, bounds.retention / 4))


@dataclass(slots=True)
class SweepStats:
    closed_idle: int = 0
    deleted: int = 0


class Sweeper:
    def __init__(self, store: SessionStore, bounds: Bounds, *, webhooks: bool = False) -> None:
        """``webhooks``: closing an idle conversation goes to the webhook queue too."""
        self._store = store
        self._announce = ANNOUNCE_CLOSE_WITH_WEBHOOKS if webhooks else ANNOUNCE_CLOSE
        self.interval = sweep_interval(bounds)
        self.stats = SweepStats()
        self._failing = False  # log an outage once, not every sweep

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sweep_once()

    async def sweep_once(self) -> None:
        try:
            swept = await self._store.sweep(time.time(), announce=self._announce)
        except (StoreUnavailable, BrokerError) as exc:
            if not self._failing:
                logger.warning("sweep failed, trying again in %.1f s: %s", self.interval, exc)
            self._failing = True
            return
        self._failing = False
        self.stats.closed_idle += len(swept.closed)
        self.stats.deleted += swept.deleted
        if swept.closed or swept.deleted:
            logger.info("sweep: closed %d idle sessions, deleted %d", len(swept.closed), swept.deleted)
