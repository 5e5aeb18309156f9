"""Background work done in rounds (the presence watch, the queue watch, the router, the
customer presence report): one round every interval; a store or broker outage pauses the
rounds, logged once (not once a round), and any other failure is logged and the next round
tries again, so that the work never stops for good."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.domain.store.base import StoreError
from realtime.broker import BrokerError


async def every(
    interval: float, one_round: Callable[[], Awaitable[None]], what: str, logger: logging.Logger
) -> None:
    """Run ``one_round`` every ``interval`` seconds, forever (until cancelled)."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await one_round()
        except (StoreError, BrokerError) as exc:
            if not failing:
                logger.warning("%s paused, the store is away: %s", what, exc)
            failing = True
        except Exception:  # the next round tries again
            logger.exception("%s: a round failed", what)
        else:
            if failing:
                logger.info("%s resumed", what)
            failing = False
