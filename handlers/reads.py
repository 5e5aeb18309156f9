"""Read receipts, both ways (docs/api.md, "Read receipts"): the customer or the agent holding a
conversation says how far it has read; the other side hears ``read`` on the session's channel."""

import functools

from aiohttp import web
from marshmallow import ValidationError

from app.domain import announcements, reads
from app.domain.store import Session
from app.keys import SOURCE
from handlers.common import backends


async def read_up_to(
    request: web.Request,
    session_name: str,
    reader: reads.Reader,
    up_to: str,
    *,
    agent_id: str | None = None,
    incarnation: str | None = None,
) -> Session:
    """Mark the read and announce it; the session as it is after (what the caller answers)."""
    announce = functools.partial(
        announcements.of_read, reader=reader, agent_id=agent_id, source=request.app[SOURCE]
    )
    try:
        transition = await reads.mark_read(
            backends(request).store,
            session_name,
            reader,
            up_to,
            agent_id=agent_id,
            announce=announce,
            incarnation=incarnation,
        )
    except reads.UnknownMessage as exc:
        raise ValidationError({"up_to": [str(exc)]}) from None
    return transition.session
