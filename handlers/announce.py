"""The announcements of app.domain.announcements, with the source of the sub-app serving the
request: what a handler hands the store to publish with a change."""

import functools

from aiohttp import web

from app.domain import announcements
from app.domain.store import Action
from app.domain.store.base import Announce, AnnounceMessage, AnnounceStart
from app.keys import SETTINGS, SOURCE


def _webhooks(request: web.Request) -> bool:
    return bool(request.config_dict[SETTINGS].webhook_urls)


def transition_events(request: web.Request, action: Action, agent_id: str | None = None) -> Announce:
    return functools.partial(
        announcements.of_transition,
        action=action,
        source=request.app[SOURCE],
        agent_id=agent_id,
        webhooks=_webhooks(request),
    )


def start_events(request: web.Request) -> AnnounceStart:
    return functools.partial(announcements.of_start, webhooks=_webhooks(request))


def rating_events(request: web.Request) -> Announce:
    return functools.partial(announcements.of_rating, source=request.app[SOURCE], webhooks=_webhooks(request))


def note_events(request: web.Request) -> AnnounceMessage:
    return functools.partial(announcements.of_note, source=request.app[SOURCE])


def message_events(request: web.Request, *, to_holder: bool = False) -> AnnounceMessage:
    return functools.partial(announcements.of_message, source=request.app[SOURCE], to_holder=to_holder)
