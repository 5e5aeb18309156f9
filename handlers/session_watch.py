"""Ends the streams of sessions that are gone: deleted past retention, lost with Redis's data
(a FLUSHALL, a restart without persistence), or started again under the same name. Their
clients reconnect and get 404 (or 401 for a token of the conversation before): an open
stream would otherwise wait forever for events that cannot come.

One read of every watched session per interval and process (pipelines of WATCH_BATCH
sessions, the event loop free between them), not one per stream."""

import asyncio
import logging

from app.domain.store import SessionStore, StoreUnavailable
from handlers.sse import StreamRegistry

logger = logging.getLogger(__name__)

# Sessions read per round trip: thousands in one pipeline held the event loop for tens of
# milliseconds (the contact-center benchmark's p99).
WATCH_BATCH = 500


async def end_streams_of_gone_sessions(registry: StreamRegistry, store: SessionStore) -> int:
    """One check; returns how many streams it ended."""
    watched = [(s, *s.session) for s in registry.open_streams() if s.session is not None]
    if not watched:
        return 0
    names = sorted({name for _, name, _ in watched})
    alive = {}
    for start in range(0, len(names), WATCH_BATCH):
        alive.update(await store.get_many(names[start : start + WATCH_BATCH]))
    ended = 0
    for stream, name, incarnation in watched:
        session = alive.get(name)
        if session is None or session["incarnation"] != incarnation:
            stream.subscription.close()
            ended += 1
    if ended:
        logger.info("ended %d streams of sessions that are gone", ended)
    return ended


async def watch_sessions(registry: StreamRegistry, store: SessionStore, interval: float) -> None:
    """Check every ``interval`` (the heartbeat's: a gone session's stream ends within about
    one heartbeat). A store outage skips a check: its sessions are not gone, only unreadable."""
    while True:
        await asyncio.sleep(interval)
        try:
            await end_streams_of_gone_sessions(registry, store)
        except StoreUnavailable as exc:
            logger.debug("session watch skipped: %s", exc)
