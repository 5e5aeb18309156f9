"""The sweeper: closes bot conversations idle past ``--idle-ttl`` and deletes closed ones past
``--retention`` (docs/security.md, "Bounds").

Every process sweeps on its own timer; running it twice at once is harmless (a close is a
compare-and-set that one sweeper wins, deleting is idempotent), so there is no lock to lose
with a process. Closes are announced like an agent's, from the source ``system``."""

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from app.domain.announcements import announce_transition
from app.domain.store import SessionStore, StoreUnavailable
from app.domain.store.base import Bounds
from realtime.broker import Broker, BrokerError
from realtime.events import envelope

logger = logging.getLogger(__name__)

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
    def __init__(self, store: SessionStore, broker: Broker, bounds: Bounds) -> None:
        self._store = store
        self._broker = broker
        self.interval = sweep_interval(bounds)
        self.stats = SweepStats()
        self._failing = False  # log an outage once, not every sweep

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sweep_once()

    async def sweep_once(self) -> None:
        try:
            swept = await self._store.sweep(time.time())
            for transition in swept.closed:
                await announce_transition(self._publish, "close", transition)
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

    async def _publish(self, channel: str, type_: str, payload: dict[str, Any]) -> str:
        return await self._broker.publish(channel, envelope(type_, payload, "system"))
