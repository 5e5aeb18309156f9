"""Background work done in rounds (the presence watch, the queue watch, the router, the
customer presence report): one round every interval; a store or broker outage pauses the
rounds, logged once (not once a round), and any other failure is logged and the next round
tries again, so that the work never stops for good; and stopping such work when the app
stops, so that it does stop."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from app.domain.store.base import StoreError
from realtime.broker import BrokerError

logger = logging.getLogger(__name__)

# A task not stopped STOP_WAIT seconds after its cancellation is cancelled again.
STOP_WAIT = 0.5
STOP_ATTEMPTS = 4


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


async def stop(task: "asyncio.Task[None]") -> None:
    """Cancel ``task`` and wait for it, asking again while it runs on: a cancellation landing
    as an awaited call completes can be lost on its way (Python 3.11's ``wait_for`` returns the
    result instead), and a job loops forever, so the stop never ends. Past STOP_ATTEMPTS the
    task is left to the loop's own end."""
    for _ in range(STOP_ATTEMPTS):
        task.cancel()
        done, _ = await asyncio.wait((task,), timeout=STOP_WAIT)
        if done:
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
            return
        logger.warning("%s did not stop when cancelled: cancelling it again", task.get_name())
    logger.error("%s did not stop after %d cancellations", task.get_name(), STOP_ATTEMPTS)
