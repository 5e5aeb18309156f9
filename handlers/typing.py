"""Typing, both ways (docs/api.md, "Typing"): the customer or the agent holding a conversation
says it is writing; the other side hears ``typing`` on the session's channel. Ephemeral (no id,
no history, never replayed), at most one per sender every 2 s: more are accepted and dropped."""

from typing import Any

from aiohttp import web

from app.domain.typing_gate import TYPING_WINDOW, sender
from app.keys import SOURCE
from handlers.common import backends
from realtime.channels import session_channel
from realtime.events import envelope


async def signal_typing(
    request: web.Request, session_name: str, who: str, agent_id: str | None
) -> dict[str, Any]:
    """Send ``typing`` unless this sender sent one within the window; what the caller answers."""
    sent = await backends(request).typing.open(sender(session_name, who, agent_id), TYPING_WINDOW)
    if sent:
        payload: dict[str, Any] = {"session_name": session_name, "who": who}
        if agent_id is not None:
            payload["agent_id"] = agent_id
        event = envelope("typing", payload, request.app[SOURCE])
        await backends(request).broker.signal(session_channel(session_name), event)
    return {"session_name": session_name, "sent": sent}
