"""Customer side, mounted at /chatbot: sessions, chat with the bot, asking for a human."""

import logging
import secrets
from typing import Any

from aiohttp import web

from app.errors import ApiError
from app.keys import COMPONENT, RESPONDER, SETTINGS, SOURCE, TOKENS
from app.store import SessionExists, TransitionRefused
from handlers.access import CHALLENGE, check_session, limit_actions, who
from handlers.announce import announce_message, announce_transition
from handlers.common import add_session_read_routes, backends, checked_content, load_body
from schemas import ChatSchema, CreateSessionSchema, EscalateSchema

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _session_token(request: web.Request, session_name: str) -> dict[str, str]:
    """``{"token": ...}`` for a session just created (nothing under --insecure)."""
    authority = request.config_dict.get(TOKENS)
    if authority is None:
        return {}
    ttl = request.config_dict[SETTINGS].session_token_ttl
    return {"token": authority.mint("session", session_name, ttl)}


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    limit_actions(request, who(request, required=False))
    body = await load_body(request, CreateSessionSchema())
    name = body["session_name"] or f"s-{secrets.token_hex(8)}"
    session = await backends(request).store.create(name)
    return web.json_response({**session, **_session_token(request, name)}, status=201)


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.Response:
    principal = who(request, required=False)
    limit_actions(request, principal)
    body = await load_body(request, ChatSchema())
    name, content = body["session_name"], checked_content(request, body["content"])
    store = backends(request).store
    issued: dict[str, str] = {}
    if principal is not None:
        check_session(principal, name)
        await store.get(name)
    elif TOKENS in request.config_dict:
        # Without a token a customer may only start a new conversation, and gets its token.
        try:
            await store.create(name)
        except SessionExists:
            raise ApiError(401, "unauthorized", "a token is required", headers=CHALLENGE) from None
        issued = _session_token(request, name)
    else:
        await store.get_or_create(name)
    response = await _converse(request, name, content)
    return web.json_response({**response, **issued})


async def _converse(request: web.Request, name: str, content: str) -> dict[str, Any]:
    """The customer's message, and the bot's answer while the bot holds the conversation."""
    store = backends(request).store
    session, message = await store.add_message(name, "customer", content)
    await announce_message(request, session, message, to_holder=True)
    if session["status"] != "bot_active":
        return {"session": session, "message": message, "reply": None}

    answer = await request.config_dict[RESPONDER].reply(session, message)
    try:
        session, reply = await store.add_message(name, "bot", answer.text)
    except TransitionRefused:
        # An agent took the session over while the bot was thinking: the agent answers.
        session = await store.get(name)
        return {"session": session, "message": message, "reply": None}
    await announce_message(request, session, reply)
    if answer.escalate:
        try:
            transition = await store.apply(name, "escalate", reason=answer.reason)
        except TransitionRefused:
            pass  # taken over meanwhile: nothing to ask for
        else:
            await announce_transition(request, "escalate", transition)
            session = transition.session
    return {"session": session, "message": message, "reply": reply}


@routes.post("/api/manual/escalate")
async def escalate(request: web.Request) -> web.Response:
    principal = who(request)
    limit_actions(request, principal)
    body = await load_body(request, EscalateSchema())
    check_session(principal, body["session_name"])
    transition = await backends(request).store.apply(
        body["session_name"], "escalate", reason=body["reason"]
    )
    await announce_transition(request, "escalate", transition)
    return web.json_response(transition.session)


add_session_read_routes(routes)


def create_chatbot_app() -> web.Application:
    app = web.Application()
    app[SOURCE] = "ai_chatbot"
    app[COMPONENT] = "chatbot"
    app.add_routes(routes)
    return app
