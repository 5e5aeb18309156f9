"""Customer side, mounted at /chatbot: sessions, chat with the bot, asking for a human."""

import logging
import secrets

from aiohttp import web

from app.keys import COMPONENT, RESPONDER, SOURCE
from app.store import TransitionRefused
from handlers.announce import announce_message, announce_transition
from handlers.common import add_session_read_routes, backends, checked_content, load_body
from schemas import ChatSchema, CreateSessionSchema, EscalateSchema

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    body = await load_body(request, CreateSessionSchema())
    name = body["session_name"] or f"s-{secrets.token_hex(8)}"
    session = await backends(request).store.create(name)
    return web.json_response(session, status=201)


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.Response:
    body = await load_body(request, ChatSchema())
    name, content = body["session_name"], checked_content(request, body["content"])
    store = backends(request).store
    await store.get_or_create(name)
    session, message = await store.add_message(name, "customer", content)
    await announce_message(request, session, message, to_holder=True)
    if session["status"] != "bot_active":
        return web.json_response({"session": session, "message": message, "reply": None})

    answer = await request.config_dict[RESPONDER].reply(session, message)
    try:
        session, reply = await store.add_message(name, "bot", answer.text)
    except TransitionRefused:
        # An agent took the session over while the bot was thinking: the agent answers.
        session = await store.get(name)
        return web.json_response({"session": session, "message": message, "reply": None})
    await announce_message(request, session, reply)
    if answer.escalate:
        try:
            transition = await store.apply(name, "escalate", reason=answer.reason)
        except TransitionRefused:
            pass  # taken over meanwhile: nothing to ask for
        else:
            await announce_transition(request, "escalate", transition)
            session = transition.session
    return web.json_response({"session": session, "message": message, "reply": reply})


@routes.post("/api/manual/escalate")
async def escalate(request: web.Request) -> web.Response:
    body = await load_body(request, EscalateSchema())
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
