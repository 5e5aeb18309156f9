"""The customer's place in the queue (docs/routing.md): ``GET .../queue`` answers it, and each
process that serves the chatbot tells its own streams of waiting conversations when it changes
(``queue_update``, ephemeral, at most one a second per conversation)."""

import logging
import time
from typing import Any

from aiohttp import web

from app.domain.queue_stats import WINDOW, estimate
from app.domain.store import Session
from app.domain.store.base import StoreError
from app.keys import AGENTS, BACKENDS
from app.process.rounds import every
from handlers.common import Config
from realtime.channels import session_channel
from realtime.events import envelope

logger = logging.getLogger(__name__)

UPDATE_EVERY = 1.0  # seconds between two looks at the queue
WATCHED = 1000  # the queue's first conversations are told their place; those after, when they get there


async def _pace(app: Config) -> tuple[int, int]:
    """Takeovers in the last WINDOW, and agents online (0, 0 if they cannot be read now)."""
    try:
        served = await app[BACKENDS].service.served(time.time())
        online = sum(1 for agent, _ in await app[AGENTS].all() if agent["status"] == "online")
    except StoreError as exc:
        logger.debug("no queue pace now: %r", exc)
        return 0, 0
    return served, online


async def place_in_queue(app: Config, session: Session) -> dict[str, Any]:
    name = session["session_name"]
    position = (
        await app[BACKENDS].store.queue_position(name) if session["status"] == "waiting_agent" else None
    )
    wait = None
    if position is not None:
        served, online = await _pace(app)
        wait = estimate(position, served, WINDOW, online)
    return {
        "session_name": name,
        "status": session["status"],
        "position": position,
        "estimated_wait_seconds": wait,
    }


async def note_served(request: web.Request) -> None:
    """A waiting conversation was taken: the queue's pace (statistics: never fails the takeover)."""
    try:
        await request.config_dict[BACKENDS].service.note(time.time())
    except StoreError as exc:
        logger.debug("a takeover went unnoted in the queue's pace: %r", exc)


async def watch_queue(app: web.Application) -> None:
    told: dict[str, tuple[int, int | None]] = {}

    async def one_round() -> None:
        nonlocal told
        told = await _tell_places(app, told)

    await every(UPDATE_EVERY, one_round, "queue places", logger)


async def _tell_places(
    app: web.Application, told: dict[str, tuple[int, int | None]]
) -> dict[str, tuple[int, int | None]]:
    """Tell this process's streams of waiting conversations their place if it changed; what
    each was told, for the next round."""
    broker = app[BACKENDS].broker
    page = await app[BACKENDS].store.list_sessions("waiting_agent", limit=WATCHED)
    watched = [
        (position, s["session_name"])
        for position, s in enumerate(page.items, start=1)
        if broker.local_subscribers(session_channel(s["session_name"]))
    ]
    if not watched:
        return {}
    served, online = await _pace(app)
    now_told: dict[str, tuple[int, int | None]] = {}
    for position, name in watched:
        place = (position, estimate(position, served, WINDOW, online))
        now_told[name] = place
        if told.get(name) != place:
            payload = {"session_name": name, "position": place[0], "estimated_wait_seconds": place[1]}
            broker.signal_here(session_channel(name), envelope("queue_update", payload, "system"))
    return now_told
