"""Customer side, mounted at /chatbot: sessions, chat with the bot, asking for a human."""

import asyncio
import json
import logging
import secrets
from typing import Any

from aiohttp import web
from aiohttp.http import StreamWriter

from app.domain.bot import collect, reply_of, stream_of
from app.domain.store import Session, SessionNotFound, TransitionRefused
from app.keys import COMPONENT, METRICS, RESPONDER, SETTINGS, SOURCE, TOKENS
from app.web.answers import json_answer
from app.web.errors import CHALLENGE, ApiError, error_response
from app.web.middlewares import _from_exception
from handlers.access import (
    check_incarnation,
    check_session,
    limit_actions,
    limit_starts,
    start_wait,
    who,
)
from handlers.announce import message_events, transition_events
from handlers.common import add_session_read_routes, backends, checked_content, load_body
from handlers.sse import SEND_TIMEOUT
from realtime.events import named_frame
from schemas import ChatSchema, CreateSessionSchema, EscalateSchema
from schemas.fields import MAX_SUMMARY
from schemas.plain import PlainBody

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Schemas are stateless once built, and building one deep-copies its fields: built once.
CREATE_SESSION = PlainBody(CreateSessionSchema())
CHAT = PlainBody(ChatSchema())
ESCALATE = PlainBody(EscalateSchema())

# /api/chat/stream's answer: an event stream that no proxy buffers and nobody caches.
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


# What the bot says when it would hand the conversation over but --max-waiting customers wait.
QUEUE_FULL_NOTICE = (
    "All our agents are busy right now, so I'll stay with you for the moment. "
    "Please ask for a person again in a few minutes."
)
# ... and when this client address has started or escalated --start-rate conversations lately.
START_RATE_NOTICE = (
    "I can't reach a person for you just yet: too many requests came from your network. "
    "Please ask again in a minute."
)


def _session_token(request: web.Request, session: Session) -> dict[str, str]:
    """``{"token": ...}`` for a session just created (nothing under --insecure), bound to this
    conversation by its incarnation."""
    authority = request.config_dict.get(TOKENS)
    if authority is None:
        return {}
    ttl = request.config_dict[SETTINGS].session_token_ttl
    return {"token": authority.mint("session", session["session_name"], ttl, session["incarnation"])}


async def _queue_full(request: web.Request) -> bool:
    """Whether --max-waiting conversations wait for an agent already (counted as a refusal).
    Checked before the escalation, not with it: escalations in flight together may pass the
    limit by their number."""
    limit = request.config_dict[SETTINGS].max_waiting
    if await backends(request).store.count("waiting_agent") < limit:
        return False
    request.config_dict[METRICS].escalations_refused["queue_full"] += 1
    return True


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    limit_actions(request, who(request, required=False))
    body = await load_body(request, CREATE_SESSION)
    limit_starts(request, "start")
    name = body["session_name"] or f"s-{secrets.token_hex(8)}"
    session = await backends(request).store.create(name)
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
        await store.get_or_create(name)
    return name, content, None


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.Response:
    name, content, incarnation = await _accept_chat(request)
    return json_answer(await _converse(request, name, content, incarnation))


@routes.post("/api/chat/stream")
async def chat_stream(request: web.Request) -> web.StreamResponse:
    """/api/chat whose answer is an event stream: ``chunk`` events with the bot's reply as the
    responder produces it, then ``done`` with what /api/chat answers (or ``error``). Anything
    refused before the customer's message is stored is the usual JSON error."""
    name, content, incarnation = await _accept_chat(request)
    reply = ReplyStream(request, name)
    try:
        result = await _converse(request, name, content, incarnation, reply)
    except Exception as exc:
        if not reply.started:
            raise  # nothing stored: the JSON error of /api/chat
        await reply.fail(exc)
    else:
        await reply.send("done", result)
    return await reply.finish()


class ReplyStream:
    """The answer of /api/chat/stream: SSE frames with an ``event:`` name and no ``id:`` (a
    response to one request, not a channel's events: nothing to resume).

    Frames are handed to the socket without waiting for the client (``drain=False``): a reply
    is a few kilobytes, so the buffer stays small, and a slow or departed client never holds
    up storing and publishing the reply. A failed write means the client has left: the stream
    stops writing and the conversation goes on (the handler runs shielded, see
    ``app.web.middlewares.shielded``)."""

    def __init__(self, request: web.Request, session_name: str) -> None:
        self.response = web.StreamResponse(headers=STREAM_HEADERS)
        self._request = request
        self._session_name = session_name
        self._writer: StreamWriter | None = None
        self._chunks = 0
        self.started = False  # the customer's message is in: errors are events from here on
        self.gone = False  # the client has left: nothing more is written

    async def start(self) -> None:
        """Send the 200 and the headers: the customer's message is stored and published."""
        self.started = True
        try:
            writer = await self.response.prepare(self._request)
        except OSError as exc:  # gone before the headers: the conversation goes on regardless
            self._left(exc)
            return
        assert isinstance(writer, StreamWriter)
        self._writer = writer

    def _left(self, exc: BaseException) -> None:
        logger.debug("chat stream: the client has left: %r", exc)
        self.gone = True

    async def chunk(self, text: str) -> None:
        """One piece of the bot's reply, as the responder produced it."""
        await self.send("chunk", {"session_name": self._session_name, "index": self._chunks, "text": text})
        self._chunks += 1

    async def fail(self, exc: Exception) -> None:
        """The reply failed after the stream started: an ``error`` event with the JSON error
        body /api/chat would have answered (logged as the middleware logs it)."""
        response = _from_exception(exc)
        if response is None:
            request = self._request
            logger.exception("unhandled error on %s %s", request.method, request.rel_url.raw_path)
            response = error_response(500, "internal_error", "internal server error")
        assert response.text is not None
        await self.send("error", json.loads(response.text))

    async def send(self, event: str, data: dict[str, Any]) -> None:
        if self.gone or self._writer is None:
            return
        frame = named_frame(event, data)
        try:
            # drain=False: written (and chunk-framed) at once, never waiting for the client.
            await self._writer.write(frame, drain=False)
        except OSError as exc:  # ClientConnectionResetError: the client has left
            self._left(exc)

    async def finish(self) -> web.StreamResponse:
        """End the response (waiting for the client at most SEND_TIMEOUT)."""
        if self._writer is not None and not self.gone:
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self.response.write_eof()
            except (OSError, TimeoutError) as exc:
                logger.debug("chat stream: could not end the response: %r", exc)
                if self._request.transport is not None:
                    self._request.transport.abort()
        return self.response


async def _converse(
    request: web.Request,
    name: str,
    content: str,
    incarnation: str | None,
    stream: ReplyStream | None = None,
) -> dict[str, Any]:
    """The customer's message, and the bot's answer while the bot holds the conversation.

    With ``stream`` (/api/chat/stream), the stream starts once the customer's message is stored
    and published, and the reply's pieces go to it as the responder produces them; everything
    stored and published is the same as without it."""
    store = backends(request).store
    session, message = await store.add_message(
        name, "customer", content, announce=message_events(request, to_holder=True), incarnation=incarnation
    )
    if stream is not None:
        await stream.start()
    if session["status"] != "bot_active":
        return {"session": session, "message": message, "reply": None}

    responder = request.config_dict[RESPONDER]
    if stream is None:
        answer = await reply_of(responder, session, message)
    else:
        answer = await collect(stream_of(responder, session, message), stream.chunk)
    text, escalate = answer.text, answer.escalate
    refusal = await _escalation_refused(request, session) if escalate else None
    if refusal is not None:
        # The bot says so, in the same reply (a streamed one gets it as its last piece), and
        # keeps the conversation.
        notice = f"{chr(10) * 2 if text else ''}{refusal}"
        text, escalate = text + notice, False
        if stream is not None:
            await stream.chunk(notice)
    try:
        session, reply = await store.add_message(name, "bot", text, announce=message_events(request))
    except TransitionRefused:
        # An agent took the session over while the bot was thinking: the agent answers.
        session = await store.get(name)
        return {"session": session, "message": message, "reply": None}
    if escalate:
        session = await _bot_escalates(request, session, answer.reason, answer.summary)
    return {"session": session, "message": message, "reply": reply}


async def _bot_escalates(
    request: web.Request, session: Session, reason: str | None, summary: str | None
) -> Session:
    """The bot hands the conversation to a person (it has said so, and the escalation was not
    refused: see ``_escalation_refused``); the session after it."""
    try:
        transition = await backends(request).store.apply(
            session["session_name"],
            "escalate",
            reason=reason,
            # A bot's words are not a client's request: a summary past the bound is cut, not
            # refused (the escalation must happen).
            summary=summary[:MAX_SUMMARY] if summary is not None else None,
            announce=transition_events(request, "escalate"),
        )
    except TransitionRefused:
        return session  # taken over meanwhile: nothing to ask for
    return transition.session


async def _escalation_refused(request: web.Request, session: Session) -> str | None:
    """What the bot tells the customer when it would hand over but may not: --max-waiting
    customers wait already, or this client address is past --start-rate (both counted as
    refusals). The conversation then stays with the bot, and the chat answers 200."""
    if await _queue_full(request):
        return QUEUE_FULL_NOTICE
    if start_wait(request, "escalation") > 0:
        logger.info(
            "session %s: the bot's escalation refused, its client is over --start-rate",
            session["session_name"],
        )
        return START_RATE_NOTICE
    return None


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
    if session["status"] == "bot_active" and await _queue_full(request):
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
    return json_answer(transition.session)


add_session_read_routes(routes)


def create_chatbot_app() -> web.Application:
    app = web.Application()
    app[SOURCE] = "ai_chatbot"
    app[COMPONENT] = "chatbot"
    app.add_routes(routes)
    return app
