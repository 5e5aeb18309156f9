"""The announcements of app.domain.announcements, published with the source of the sub-app
serving the request."""

import functools

from aiohttp import web

from app.domain import announcements
from app.domain.announcements import Publish
from app.domain.store import Action, Message, Session, Transition
from handlers.common import publish


def publisher(request: web.Request) -> Publish:
    return functools.partial(publish, request)


async def announce_transition(
    request: web.Request, action: Action, transition: Transition, agent_id: str | None = None
) -> None:
    await announcements.announce_transition(publisher(request), action, transition, agent_id)


async def announce_message(
    request: web.Request, session: Session, message: Message, *, to_holder: bool = False
) -> None:
    await announcements.announce_message(publisher(request), session, message, to_holder=to_holder)
