"""Customer side, mounted at /chatbot: sessions, chat with the bot, asking for a human, and
rating the conversation once it is closed."""

import logging
import secrets
from typing import Any

from aiohttp import web

from app.domain import rating
from app.domain.store import Session, SessionNotFound
from app.domain.store.rules import now
from app.keys import BOT_METRICS, COMPONENT, RATING_METRICS, SETTINGS, SOURCE, TOKENS
from app.web.answers import json_answer
from app.web.errors import CHALLENGE, ApiError
from handlers.access import (
    check_incarnation,
    check_session,
    limit_actions,
    limit_starts,
    require_session,
    who,
)
from handlers.announce import message_events, rating_events, start_events, transition_events
from handlers.bot_reply import BotTurn, queue_full
from handlers.common import add_session_read_routes, backends, checked_content, load_body, path_name
from handlers.queue_watch import place_in_queue
from handlers.reads import read_up_to
from handlers.reply_stream import ReplyStream
from handlers.routing import customer_active, customer_arrived
from handlers.typing import signal_typing
from schemas import ChatSchema, CreateSessionSchema, EscalateSchema, RatingSchema, ReadSchema
from schemas.plain import PlainBody

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Schemas are stateless once built, and building one deep-copies its fields: built once.
CREATE_SESSION = PlainBody(CreateSessionSchema())
CHAT = PlainBody(ChatSchema())
ESCALATE = PlainBody(EscalateSchema())
READ = PlainBody(ReadSchema())
RATING = PlainBody(RatingSchema())


def _session_token(request: web.Request, session: Session) -> dict[str, str]:
    """``{"token": ...}`` for a session just created (nothing under --insecure), bound to this
    conversation by its incarnation."""
    authority = request.config_dict.get(TOKENS)
    if authority is None:
        return {}
    ttl = request.config_dict[SETTINGS].session_token_ttl
    return {"token": authority.mint("session", session["session_name"], ttl, session["incarnation"])}


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    limit_actions(request, who(request, required=False))
    body = await load_body(request, CREATE_SESSION)
    limit_starts(request, "start")
    name = body["session_name"] or f"s-{secrets.token_hex(8)}"
    session = await backends(request).store.create(name, announce=start_events(request))
    await customer_arrived(request, name)
    return json_answer({**session, **_session_token(request, session)}, status=201)


async def _accept_chat(request: web.Request) -> tuple[str, str, str | None]:
    """What /api/chat and /api/chat/stream check before anything is stored: token, rate limit,
    body and content limit; then the name, the content, and the token's conversation, which
    the store checks as it stores the message (no read of its own). With tokens required a
    conversation starts only through POST /sessions (which hands out its token), so an
    anonymous client cannot start conversations by chatting; under --insecure a chat creates
    its session (the curl tour), which counts against the client address's --start-rate as
    POST /sessions does."""
    principal = who(request, required=False)
    limit_actions(request, principal)
    body = await load_body(request, CHAT)
    name, content = body["session_name"], checked_content(request, body["content"])
    if principal is not None:
        check_session(principal, name)
        return name, content, principal.incarnation
    if TOKENS in request.config_dict:
        raise ApiError(
            401,
            "unauthorized",
            "a token is required: start a conversation with POST /chatbot/api/sessions",
            headers=CHALLENGE,
        )
    store = backends(request).store
    try:
        await store.get(name)
    except SessionNotFound:
        limit_starts(request, "start")  # only a chat that starts a conversation counts
        _, created = await store.get_or_create(name, announce=start_events(request))
        if created:
            await customer_arrived(request, name)
    return name, content, None


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.Response:
    name, content, incarnation = await _accept_chat(request)
    result, _ = await _converse(request, name, content, incarnation)
    return json_answer(result)


@routes.post("/api/chat/stream")
async def chat_stream(request: web.Request) -> web.StreamResponse:
    """/api/chat whose answer is an event stream: ``chunk`` events with the bot's reply as the
    bot produces it, then ``done`` with what /api/chat answers (or ``cancelled``, or
    ``error``). Anything refused before the customer's message is stored is the usual JSON
    error."""
    name, content, incarnation = await _accept_chat(request)
    reply = ReplyStream(request, name)
    try:
        result, last = await _converse(request, name, content, incarnation, reply)
    except Exception as exc:
        if not reply.started:
            raise  # nothing stored: the JSON error of /api/chat
        await reply.fail(exc)
    else:
        await reply.send(last, result)
    return await reply.finish()


async def _converse(
    request: web.Request,
    name: str,
    content: str,
    incarnation: str | None,
    stream: ReplyStream | None = None,
) -> tuple[dict[str, Any], str]:
    """The customer's message, and the bot's answer while the bot holds the conversation; and
    the streamed answer's last frame (``done``, or ``cancelled`` if the conversation left the
    bot meanwhile: handlers.bot_reply).

    With ``stream`` (/api/chat/stream), the stream starts once the customer's message is stored
    and published, and the reply's pieces go to it as the bot produces them; everything stored
    and published is the same as without it."""
    store = backends(request).store
    session, message = await store.add_message(
        name, "customer", content, announce=message_events(request, to_holder=True), incarnation=incarnation
    )
    customer_active(request, name)
    if stream is not None:
        await stream.start()
    if session["status"] != "bot_active":
        return {"session": session, "message": message, "reply": None}, "done"
    turn = BotTurn(request, session, message, stream)
    result = await turn.run()
    return result, turn.event


@routes.post("/api/manual/escalate")
async def escalate(request: web.Request) -> web.Response:
    principal = who(request)
    limit_actions(request, principal)
    body = await load_body(request, ESCALATE)
    name = body["session_name"]
    check_session(principal, name)
    store = backends(request).store
    session = await store.get(name)
    check_incarnation(principal, session)
    limit_starts(request, "escalation")
    if session["status"] == "bot_active" and await queue_full(request):
        raise ApiError(
            409, "queue_full", "all agents are busy: the conversation stays with the bot; try again later"
        )
    transition = await store.apply(
        name,
        "escalate",
        reason=body["reason"],
        summary=body["summary"],
        announce=transition_events(request, "escalate"),
    )
    if transition.changed:
        request.config_dict[BOT_METRICS].handoffs.labels("requested").inc()
    return json_answer(transition.session)


@routes.post("/api/sessions/{session_name}/typing")
async def customer_typing(request: web.Request) -> web.Response:
    """The customer is writing: the agent's view of the conversation hears it."""
    name = path_name(request, "session_name")
    principal = require_session(request, name)
    limit_actions(request, principal)
    session = await backends(request).store.get(name)
    check_incarnation(principal, session)
    if session["status"] == "closed":
        raise ApiError(409, "conflict", "session is closed")
    return json_answer(await signal_typing(request, name, "customer", None))


@routes.post("/api/sessions/{session_name}/read")
async def customer_read(request: web.Request) -> web.Response:
    """The customer has read the conversation up to a message: the agent's view hears it."""
    name = path_name(request, "session_name")
    principal = require_session(request, name)
    limit_actions(request, principal)
    body = await load_body(request, READ)
    incarnation = principal.incarnation if principal is not None else None
    return json_answer(await read_up_to(request, name, "customer", body["up_to"], incarnation=incarnation))


@routes.post("/api/sessions/{session_name}/rating")
async def rate_conversation(request: web.Request) -> web.Response:
    """The customer rates the closed conversation, once (docs/api.md, "Satisfaction"): the
    store's move checks both, so a refusal changes nothing and of two at once one is kept."""
    name = path_name(request, "session_name")
    principal = require_session(request, name)
    limit_actions(request, principal)
    body = await load_body(request, RATING)
    score = body["score"]
    try:
        transition = await backends(request).store.change(
            name,
            rating.rate(score, body["comment"], now()),
            announce=rating_events(request),
            incarnation=principal.incarnation if principal is not None else None,
        )
    except rating.RatingRefused as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    request.config_dict[RATING_METRICS].scores.observe(score)
    return json_answer(transition.session)


@routes.get("/api/sessions/{session_name}/queue")
async def queue_place(request: web.Request) -> web.Response:
    name = path_name(request, "session_name")
    principal = require_session(request, name)
    session = await backends(request).store.get(name)
    check_incarnation(principal, session)
    return json_answer(await place_in_queue(request.config_dict, session))


add_session_read_routes(routes)


def create_chatbot_app() -> web.Application:
    app = web.Application()
    app[SOURCE] = "ai_chatbot"
    app[COMPONENT] = "chatbot"
    app.add_routes(routes)
    return app
