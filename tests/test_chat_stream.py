"""POST /chatbot/api/chat/stream: the bot's reply in ``chunk`` events as the responder produces
it, then ``done`` with what /api/chat answers. Against the real app (both backends) and real
processes on Redis: chunk order and content, the final event against the transcript, the
published events compared with /api/chat's type by type, a held session, errors identical to
/api/chat's, a client that leaves mid-reply, and a split deployment."""

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any, Protocol

import aiohttp
import pytest

from app.backends import Backends, open_backends
from app.domain.auth import TokenAuthority
from app.domain.bot import (
    HANDOFF_REASON,
    BotReply,
    Handoff,
    ReplyPart,
    Responder,
    RuleBasedResponder,
    collect,
    phrases,
    reply_of,
    stream_of,
)
from app.domain.store import Message, Session, rules
from app.factory import create_app
from app.process.settings import Settings
from handlers.bot_reply import MAX_REPLY, PASSING_ON, SORRY
from tests.support.api import (
    CHATBOT,
    act,
    agent_events,
    call,
    create,
    session_events,
    transcript,
)
from tests.support.app_server import AppClient, MakeClient, ServeApp
from tests.support.processes import ServerProcess
from tests.support.sockets import close_with_reset
from tests.support.sse import Frame, SSEEvent, SSEStream, open_stream, read_frames
from tests.support.wait import until

CHAT = f"{CHATBOT}/chat"
STREAM = f"{CHATBOT}/chat/stream"
SECRET = "switchboard-test-secret-0123456789-abcdefghij"
QUIET = 0.3  # silence that proves nothing more was published
DEADLINE = 5.0  # the longest any single wait in this module may take


# --- the chat stream's wire format -------------------------------------------------------------


async def chat_stream(client: Any, body: Any, headers: dict[str, str] | None = None) -> list[Frame]:
    """POST /api/chat/stream; asserts an event-stream 200 and returns its frames."""
    async with client.post(STREAM, json=body, headers=headers) as response:
        text = "" if response.status == 200 else await response.text()
        assert response.status == 200, text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        frames = await read_frames(response)
    for frame in frames:
        assert frame.id is None, f"chat stream frames carry no id: {frame}"
        assert frame.event in ("chunk", "done", "cancelled", "error"), frame
    return frames


def split(frames: list[Frame], last: str = "done") -> tuple[list[Frame], Frame]:
    """The chunks and the final ``done`` (or ``last``: it must be last, and the only one)."""
    *chunks, done = frames
    assert done.event == last, frames
    assert all(frame.event == "chunk" for frame in chunks), frames
    return chunks, done


def check_chunks(chunks: list[Frame], name: str, content: str) -> None:
    """Chunks numbered 0, 1, ... in order, of ``name``, concatenating to ``content``."""
    for index, chunk in enumerate(chunks):
        assert chunk.data == {"session_name": name, "index": index, "text": chunk.data["text"]}, chunk
        assert isinstance(chunk.data["text"], str) and chunk.data["text"], chunk
    assert "".join(chunk.data["text"] for chunk in chunks) == content


# --- plain API helpers -------------------------------------------------------------------------


def drain(stream: SSEStream) -> Awaitable[list[SSEEvent]]:
    """Every event until the stream stays quiet for QUIET (bounded by DEADLINE)."""
    return stream.drain(QUIET, timeout=DEADLINE)


# --- normalising published events, to compare the two endpoints ------------------------------

VOLATILE = {
    "id",
    "created_at",
    "updated_at",
    "status_seq",
    "timestamp",
    "incarnation",
    "waiting_since",
    "answer_due",
}


def normal(value: Any, names: dict[str, str]) -> Any:
    """``value`` without ids and times, the session names replaced by their role."""
    if isinstance(value, dict):
        return {k: normal(v, names) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normal(v, names) for v in value]
    if isinstance(value, str):
        for name, alias in names.items():
            value = value.replace(name, alias)
    return value


def published(events: list[SSEEvent], name: str) -> list[Any]:
    return [normal(event.data, {name: "SESSION"}) for event in events]


# --- responders with controllable pacing ------------------------------------------------------


class GatedResponder(Responder):
    """Yields a first piece, then waits for ``gate`` before the rest (and a hand-off when the
    customer asks for a human): the test decides when the reply goes on."""

    FIRST, REST = "First piece, ", "then the rest."

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        yield self.FIRST
        self.waiting.set()
        async with asyncio.timeout(DEADLINE):
            await self.gate.wait()
        yield self.REST
        if "human" in message["content"]:
            yield Handoff(HANDOFF_REASON)


class OneShotResponder(Responder):
    """The earlier interface: only ``reply``."""

    async def reply(self, session: Session, message: Message) -> BotReply:
        return BotReply(f"You said: {message['content']}")


class DuckResponder:
    """Not a Responder at all: a plain object with a ``stream`` method."""

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        for piece in ("duck ", "typed"):
            yield piece


class FailingResponder(Responder):
    """Breaks after its first piece."""

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        yield "Let me think"
        raise RuntimeError("the model fell over")


class AppWithResponder(Protocol):
    """The ``app_client`` fixture. ``responder`` is Any: a test gives it a duck-typed object
    that is not a Responder, on purpose."""

    def __call__(self, responder: Any, **changes: Any) -> Awaitable[AppClient]: ...


@pytest.fixture
def app_client(serve_app: ServeApp, settings: Settings) -> AppWithResponder:
    """``await app_client(responder, **changes)``: the real app with that responder, behind a
    real test server (which, like run.py, cancels a handler when its client leaves)."""

    async def make(responder: Any, **changes: Any) -> AppClient:
        return await serve_app(create_app(replace(settings, **changes), responder=responder))

    return make


# --- the responder interface --------------------------------------------------------------------


def _session_and_message(text: str) -> tuple[Session, Message]:
    return rules.new_session("s1", status_seq=1), rules.new_message("customer", text, None)


@pytest.mark.parametrize("text", ["hello", "What are your opening hours?", "ok", "I want a human", "你好"])
async def test_rule_based_bot_streams_its_reply_in_a_few_pieces(text: str) -> None:
    """The built-in bot yields its answer in a few phrases, which make up its one-shot reply;
    a hand-off comes as a Handoff piece."""
    bot = RuleBasedResponder()
    session, message = _session_and_message(text)
    parts = [part async for part in bot.stream(session, message)]
    texts = [part for part in parts if isinstance(part, str)]
    handoffs = [part for part in parts if isinstance(part, Handoff)]
    whole = await bot.reply(session, message)
    assert 2 <= len(texts) <= 6, texts
    assert "".join(texts) == whole.text
    assert texts == phrases(whole.text)
    assert whole.escalate == bool(handoffs) == ("human" in text)
    if handoffs:
        assert handoffs == [Handoff(HANDOFF_REASON)] and whole.reason == HANDOFF_REASON


async def test_pacing_is_configurable_and_off_by_default() -> None:
    session, message = _session_and_message("hello")
    started = time.monotonic()
    await RuleBasedResponder().reply(session, message)
    assert time.monotonic() - started < 0.05
    started = time.monotonic()
    pieces = [p async for p in RuleBasedResponder(pace=0.05).stream(session, message)]
    assert time.monotonic() - started >= 0.05 * (len(pieces) - 1) * 0.9
    with pytest.raises(ValueError):
        RuleBasedResponder(pace=-1)


async def test_either_form_gives_the_other() -> None:
    """A one-shot responder streams in one piece; a streaming one's reply is its pieces
    collected; plain objects with either method are adapted; a subclass with neither fails."""
    session, message = _session_and_message("hi")
    one_shot = OneShotResponder()
    assert [p async for p in one_shot.stream(session, message)] == ["You said: hi"]
    assert [p async for p in stream_of(one_shot, session, message)] == ["You said: hi"]
    duck = DuckResponder()
    assert await reply_of(duck, session, message) == BotReply("duck typed")
    assert [p async for p in stream_of(duck, session, message)] == ["duck ", "typed"]

    class Escalating:
        async def reply(self, session: Session, message: Message) -> BotReply:
            return BotReply("ok", escalate=True, reason="because")

    parts = [p async for p in stream_of(Escalating(), session, message)]
    assert parts == ["ok", Handoff("because")]
    assert await collect(stream_of(Escalating(), session, message)) == BotReply("ok", True, "because")
    with pytest.raises(TypeError):
        type("Mute", (Responder,), {})


# --- the endpoint ------------------------------------------------------------------------------


async def test_chunks_then_the_stored_message(client: AppClient) -> None:
    """The reply arrives as chunks in order, then ``done`` with /api/chat's answer; the chunks
    make up the stored reply, and ``done`` is what the transcript holds."""
    await create(client, "st1")
    frames = await chat_stream(client, {"session_name": "st1", "content": "hello"})
    chunks, done = split(frames)
    expected = RuleBasedResponder().answer("hello").text
    assert [chunk.data["text"] for chunk in chunks] == phrases(expected)
    assert set(done.data) == {"session", "message", "reply"}
    assert done.data["session"]["status"] == "bot_active"
    assert done.data["message"]["role"] == "customer" and done.data["message"]["content"] == "hello"
    assert done.data["reply"]["role"] == "bot" and done.data["reply"]["content"] == expected
    check_chunks(chunks, "st1", done.data["reply"]["content"])
    assert await transcript(client, "st1") == [done.data["message"], done.data["reply"]]
    session = await call(client, "GET", f"{CHATBOT}/sessions/st1")
    assert session == done.data["session"]


async def test_creates_the_session_like_chat(client: AppClient) -> None:
    frames = await chat_stream(client, {"session_name": "st-new", "content": "hi"})
    _, done = split(frames)
    assert done.data["session"]["session_name"] == "st-new"
    assert [m["role"] for m in await transcript(client, "st-new")] == ["customer", "bot"]


SCENARIOS = {
    "bot": "hello there",
    "human": "can I talk to a human please",
    "held": "are you there",
    "waiting": "hello?",
}


async def _setup(client: AppClient, name: str, scenario: str) -> None:
    await create(client, name)
    if scenario == "held":
        await act(client, name, "takeover", "agent-1")
    elif scenario == "waiting":
        await call(client, "POST", f"{CHATBOT}/manual/escalate", {"session_name": name})


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_publishes_exactly_what_chat_publishes(client: AppClient, scenario: str) -> None:
    """The same conversation step through /api/chat and /api/chat/stream publishes the same
    events, type by type and payload by payload (ids and times aside), on the session channel,
    the holder's channel and the broadcast; ``done`` is /api/chat's answer; a session the bot
    does not hold gets no chunks."""
    content = SCENARIOS[scenario]
    await _setup(client, "via-chat", scenario)
    await _setup(client, "via-stream", scenario)
    seen: dict[str, tuple[list[Any], list[Any], Any]] = {}
    for name in ("via-chat", "via-stream"):
        async with AsyncExitStack() as stack:
            on_session, _ = await stack.enter_async_context(open_stream(client, session_events(name)))
            on_workbench, _ = await stack.enter_async_context(
                open_stream(client, session_events(name, "workbench"))
            )
            on_agent, _ = await stack.enter_async_context(open_stream(client, agent_events("agent-1")))
            if name == "via-chat":
                answer = await call(client, "POST", CHAT, {"session_name": name, "content": content})
            else:
                frames = await chat_stream(client, {"session_name": name, "content": content})
                chunks, done = split(frames)
                answer = done.data
                if scenario in ("held", "waiting"):
                    assert chunks == [], "no bot chunks when the bot does not answer"
                    assert answer["reply"] is None
                else:
                    check_chunks(chunks, name, answer["reply"]["content"])
            session_side, workbench_side, agent_side = await asyncio.gather(
                drain(on_session), drain(on_workbench), drain(on_agent)
            )
            assert published(session_side, name) == published(workbench_side, name)
            seen[name] = (
                published(session_side, name),
                published(agent_side, name),
                normal(answer, {name: "SESSION"}),
            )
    assert seen["via-stream"] == seen["via-chat"]
    session_seen, agent_seen, _ = seen["via-stream"]
    expected = {
        "bot": (["new_message", "new_message"], []),
        "human": (["new_message", "new_message", "status_change"], ["transfer_request"]),
        "held": (["new_message"], ["new_message"]),
        "waiting": (["new_message"], []),
    }[scenario]
    assert ([e["type"] for e in session_seen], [e["type"] for e in agent_seen]) == expected
    for events in (session_seen, agent_seen):
        assert all(e["source"] == "ai_chatbot" for e in events)


BAD_BODIES: dict[str, tuple[Any, str | None]] = {
    "missing-content": ({"session_name": "bad"}, None),
    "empty-content": ({"session_name": "bad", "content": ""}, None),
    "long-content": ({"session_name": "bad", "content": "x" * 4001}, None),
    "bad-name": ({"session_name": "no spaces", "content": "hi"}, None),
    "unknown-field": ({"session_name": "bad", "content": "hi", "role": "bot"}, None),
    "not-an-object": ([1, 2], None),
    "bad-json": ("{nope", "application/json"),
    "not-json": ("session_name=bad", "text/plain"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_validation_errors_are_chat_errors(client: AppClient, case: str) -> None:
    """A body /api/chat refuses, /api/chat/stream refuses the same way (status, JSON error
    code and fields), before any stream opens; nothing is stored or published."""
    body, content_type = BAD_BODIES[case]
    await create(client, "bad")
    answers = []
    async with open_stream(client, session_events("bad")) as (on_session, _):
        for path in (CHAT, STREAM):
            if content_type is None:
                response = await client.post(path, json=body)
            else:
                response = await client.post(path, data=body, headers={"Content-Type": content_type})
            async with response:
                assert response.content_type == "application/json", response.headers
                error = (await response.json())["error"]
                answers.append((response.status, error["code"], error.get("fields")))
        assert await drain(on_session) == []
    assert answers[0] == answers[1] and answers[0][0] in (400, 415), answers
    assert await transcript(client, "bad") == []


async def test_closed_session_is_a_conflict_like_chat(client: AppClient) -> None:
    await create(client, "shut")
    await act(client, "shut", "close", "agent-1")
    for path in (CHAT, STREAM):
        error = await call(client, "POST", path, {"session_name": "shut", "content": "hi"}, status=409)
        assert error["error"]["code"] == "conflict"
    assert await transcript(client, "shut") == []


async def test_tokens_and_limits_as_chat(make_client: MakeClient, settings: Settings) -> None:
    """Under authentication: a conversation starts only through POST /sessions (a chat without
    a token is 401 and starts nothing); a chat needs the session's own token (401 without,
    403 with another's); the action rate limit counts stream requests too (429)."""
    client = await make_client(settings, insecure=False, secret=SECRET, rate_limit=0.001, rate_burst=3)
    for path in (CHAT, STREAM):
        refused = await call(client, "POST", path, {"session_name": "mine", "content": "hello"}, status=401)
        assert refused["error"]["code"] == "unauthorized"
    token = (await create(client, "mine"))["token"]  # nothing was started before: no conflict
    assert TokenAuthority(SECRET).verify(token).subject == "mine"
    other = TokenAuthority(SECRET).mint("session", "theirs", 600)
    for path in (CHAT, STREAM):
        refused = await call(client, "POST", path, {"session_name": "mine", "content": "hi"}, status=401)
        assert refused["error"]["code"] == "unauthorized"
        refused = await call(
            client,
            "POST",
            path,
            {"session_name": "mine", "content": "hi"},
            status=403,
            headers={"Authorization": f"Bearer {other}"},
        )
        assert refused["error"]["code"] == "forbidden"
    mine = {"Authorization": f"Bearer {token}"}
    frames = await chat_stream(client, {"session_name": "mine", "content": "hello"}, headers=mine)
    assert "token" not in split(frames)[1].data
    await call(client, "POST", CHAT, {"session_name": "mine", "content": "one"}, headers=mine)
    await call(client, "POST", CHAT, {"session_name": "mine", "content": "two"}, headers=mine)
    for path in (CHAT, STREAM):
        limited = await call(
            client, "POST", path, {"session_name": "mine", "content": "more"}, status=429, headers=mine
        )
        assert limited["error"]["code"] == "rate_limited"
    roles = [m["role"] for m in await transcript(client, "mine", headers=mine)]
    assert roles == ["customer", "bot"] * 3


async def test_custom_responders_stream(app_client: AppWithResponder) -> None:
    """A one-shot responder gives one chunk; a plain object with ``stream`` streams; both
    store what they said."""
    client = await app_client(OneShotResponder())
    chunks, done = split(await chat_stream(client, {"session_name": "one", "content": "hi"}))
    assert [c.data["text"] for c in chunks] == ["You said: hi"]
    assert done.data["reply"]["content"] == "You said: hi"
    client = await app_client(DuckResponder())
    chunks, done = split(await chat_stream(client, {"session_name": "duck", "content": "hi"}))
    assert [c.data["text"] for c in chunks] == ["duck ", "typed"]
    assert [m["content"] for m in await transcript(client, "duck")] == ["hi", "duck typed"]


async def test_a_failing_bot_hands_the_conversation_to_a_person(
    app_client: AppWithResponder, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot breaks mid-reply (docs/bots.md, "When the bot fails"): after the chunks so far,
    the customer is told, the reply so far and the notice are stored as the bot's message, the
    conversation waits for an agent with reason bot_unavailable, and the chat answers 200 (the
    error logged). Never a 500, never silence."""
    client = await app_client(FailingResponder())
    await create(client, "boom")
    async with open_stream(client, session_events("boom")) as (on_session, _):
        frames = await chat_stream(client, {"session_name": "boom", "content": "hi"})
        chunks, done = split(frames)
        assert [c.data["text"] for c in chunks] == ["Let me think", f"\n\n{SORRY} {PASSING_ON}"]
        assert done.data["reply"]["content"] == f"Let me think\n\n{SORRY} {PASSING_ON}"
        assert done.data["session"]["status"] == "waiting_agent"
        assert done.data["session"]["escalation_reason"] == "bot_unavailable"
        types = [(e.type, e.payload.get("message", {}).get("role")) for e in await drain(on_session)]
        assert types == [("new_message", "customer"), ("new_message", "bot"), ("status_change", None)]
    assert [m["role"] for m in await transcript(client, "boom")] == ["customer", "bot"]
    assert any(r.levelno == logging.ERROR and "RuntimeError" in (r.exc_text or "") for r in caplog.records)


async def test_agent_takes_over_mid_reply(app_client: AppWithResponder) -> None:
    """An agent takes the session over while the bot is streaming: the reply is dropped as
    /api/chat drops it (``done`` has reply null after the chunks), nothing of it is stored or
    published."""
    bot = GatedResponder()
    client = await app_client(bot)
    await create(client, "race")
    async with open_stream(client, session_events("race")) as (on_session, _):
        async with client.post(STREAM, json={"session_name": "race", "content": "hi"}) as response:
            assert response.status == 200
            reading = asyncio.create_task(read_frames(response))
            async with asyncio.timeout(DEADLINE):
                await bot.waiting.wait()
            await act(client, "race", "takeover", "agent-7")
            bot.gate.set()
            frames = await reading
        # The piece after the takeover never reaches the customer: the answer ends with
        # ``cancelled`` (reply null: the chunk already shown is not part of the transcript).
        chunks, cancelled = split(frames, last="cancelled")
        assert [c.data["text"] for c in chunks] == [GatedResponder.FIRST]
        assert cancelled.data["reply"] is None
        assert cancelled.data["session"]["status"] == "agent_active"
        types = [(e.type, e.payload.get("message", {}).get("role")) for e in await drain(on_session)]
        assert types == [("new_message", "customer"), ("agent_joined", None), ("status_change", None)]
    assert [m["role"] for m in await transcript(client, "race")] == ["customer"]


# --- a client that leaves mid-reply ------------------------------------------------------------


def raw_request(host: str, port: int, body: dict[str, Any]) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, port), timeout=DEADLINE)
    sock.sendall(
        b"POST " + STREAM.encode() + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(payload)).encode()
        + b"\r\n\r\n"
        + payload
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    deadline = time.monotonic() + DEADLINE
    while marker not in received:
        assert time.monotonic() < deadline, received
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {received!r}"
        received += chunk
    return received


def leave(sock: socket.socket, how: str) -> None:
    if how == "reset":
        close_with_reset(sock)
    else:
        sock.close()


@pytest.mark.parametrize("how", ["close", "reset", "aiohttp"])
async def test_client_leaving_mid_reply_does_not_stop_the_reply(
    app_client: AppWithResponder, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """The client reads the first chunk and goes away (socket closed, reset, or the aiohttp
    response closed) while the bot is still answering; the server notices (the handler is
    cancelled, as run.py configures it), yet the reply is stored and published once complete,
    the escalation after it too, and nothing is logged as an error."""
    caplog.set_level(logging.INFO, logger="app.web.middlewares")
    bot = GatedResponder()
    client = await app_client(bot)
    await create(client, "leaver")
    body = {"session_name": "leaver", "content": "I want a human"}

    def request_logged() -> bool:
        return any(r.name == "app.web.middlewares" and STREAM in r.getMessage() for r in caplog.records)

    async with AsyncExitStack() as stack:
        on_session, _ = await stack.enter_async_context(open_stream(client, session_events("leaver")))
        on_agent, _ = await stack.enter_async_context(open_stream(client, agent_events("agent-1")))
        if how == "aiohttp":
            response = await client.post(STREAM, json=body)
            assert response.status == 200
            first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), DEADLINE)
            assert first.startswith(b"event: chunk\n")
            response.close()
        else:
            assert client.port is not None  # the server is started
            sock = await asyncio.to_thread(raw_request, client.host, client.port, body)
            received = await asyncio.to_thread(read_until, sock, b"event: chunk")
            assert received.startswith(b"HTTP/1.1 200")
            leave(sock, how)
        (customer,) = await on_session.take(1)
        assert customer.payload["message"]["role"] == "customer"

        async def noticed() -> bool:
            return request_logged()

        # The request's log line is written when its handler ends: here, cancelled by the
        # client's departure while the responder still waits at its gate.
        await until(noticed, timeout=DEADLINE, interval=0.02, what="the server to notice the client left")
        assert not bot.gate.is_set()
        assert [m["role"] for m in await transcript(client, "leaver")] == ["customer"]
        bot.gate.set()
        bot_message, change = await on_session.take(2)
        assert bot_message.type == "new_message"
        assert bot_message.payload["message"]["role"] == "bot"
        assert bot_message.payload["message"]["content"] == GatedResponder.FIRST + GatedResponder.REST
        assert (change.type, change.payload["status"]) == ("status_change", "waiting_agent")
        (transfer,) = await on_agent.take(1)
        assert transfer.type == "transfer_request"
        stored = await transcript(client, "leaver")
        assert [m["role"] for m in stored] == ["customer", "bot"]
        assert stored[1] == bot_message.payload["message"]
        await asyncio.gather(on_session.assert_quiet(QUIET), on_agent.assert_quiet(QUIET))
    problems = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR or (r.levelno >= logging.WARNING and r.name != "app.factory")
    ]
    assert not problems, [(r.name, r.getMessage()) for r in problems]


class GatedStore:
    """The real store, except that storing a customer's message waits for ``gate``."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def add_message(self, session_name: str, role: str, *args: Any, **kwargs: Any) -> Any:
        if role == "customer":
            self.waiting.set()
            async with asyncio.timeout(DEADLINE):
                await self.gate.wait()
        return await self._store.add_message(session_name, role, *args, **kwargs)


async def test_client_leaving_before_the_stream_starts(
    serve_app: ServeApp, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The client leaves while its message is being stored, before any answer: the message is
    stored and published, the bot answers as usual, and nothing is logged as an error."""
    caplog.set_level(logging.INFO, logger="app.web.middlewares")
    stores: list[GatedStore] = []

    async def gated_backends(settings: Settings) -> Backends:
        backends = await open_backends(settings)
        stores.append(GatedStore(backends.store))
        backends.store = stores[-1]  # type: ignore[assignment]  # a duck-typed store, gated for the test
        return backends

    client = await serve_app(create_app(settings, backends_factory=gated_backends))
    (store,) = stores
    await create(client, "early")
    async with open_stream(client, session_events("early")) as (on_session, _):
        assert client.port is not None  # the server is started
        sock = await asyncio.to_thread(
            raw_request, client.host, client.port, {"session_name": "early", "content": "hello"}
        )
        async with asyncio.timeout(DEADLINE):
            await store.waiting.wait()
        leave(sock, "reset")

        async def noticed() -> bool:
            return any(STREAM in r.getMessage() for r in caplog.records if r.name == "app.web.middlewares")

        await until(noticed, timeout=DEADLINE, interval=0.02, what="the server to notice the client left")
        store.gate.set()
        customer, bot = await on_session.take(2)
        assert [customer.payload["message"]["role"], bot.payload["message"]["role"]] == ["customer", "bot"]
        await on_session.assert_quiet(QUIET)
    assert [m["role"] for m in await transcript(client, "early")] == ["customer", "bot"]
    problems = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR or (r.levelno >= logging.WARNING and r.name != "app.factory")
    ]
    assert not problems, [(r.name, r.getMessage()) for r in problems]


# --- a split deployment on Redis ---------------------------------------------------------------


async def test_split_processes_agent_side_sees_the_streamed_conversation(
    server_process: Callable[..., ServerProcess], redis_url: str
) -> None:
    """/chat/stream on a --chatbot process; a --workbench process (sharing only Redis) sees the
    customer's and the bot's messages and the escalation on its streams and in its transcript,
    and, once its agent holds the session, the customer's streamed message reaches the agent
    with no bot chunks. A client that resets right after the first chunk changes nothing, and
    neither process logs an error."""
    chatbot = server_process("--chatbot", "--redis-url", redis_url)
    workbench = server_process("--workbench", "--redis-url", redis_url)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=DEADLINE)
    async with aiohttp.ClientSession(timeout=timeout) as http, AsyncExitStack() as stack:
        customer_side = chatbot.url
        agent_side = workbench.url
        await create(http, "split", base=customer_side)
        on_session, _ = await stack.enter_async_context(
            open_stream(http, agent_side + session_events("split", "workbench"))
        )
        on_agent, _ = await stack.enter_async_context(open_stream(http, agent_side + agent_events("agent-1")))

        async with http.post(
            customer_side + STREAM, json={"session_name": "split", "content": "I want a human"}
        ) as response:
            assert response.status == 200
            frames = await read_frames(response)
        chunks, done = split(frames)
        check_chunks(chunks, "split", done.data["reply"]["content"])
        customer, bot, change = await on_session.take(3)
        assert customer.payload["message"] == done.data["message"]
        assert bot.payload["message"] == done.data["reply"]
        assert (change.type, change.payload["status"]) == ("status_change", "waiting_agent")
        (transfer,) = await on_agent.take(1)
        assert transfer.type == "transfer_request"
        async with http.get(f"{agent_side}/workbench/api/sessions/split/messages") as answer:
            assert (await answer.json())["messages"] == [done.data["message"], done.data["reply"]]

        async with http.post(
            f"{agent_side}/workbench/api/sessions/split/takeover", json={"agent_id": "agent-1"}
        ) as answer:
            assert answer.status == 200
        await on_session.take(2)  # agent_joined, status_change
        await on_agent.take(1)  # the queue's status_change
        async with http.post(
            customer_side + STREAM, json={"session_name": "split", "content": "my order is late"}
        ) as response:
            frames = await read_frames(response)
        assert [f.event for f in frames] == ["done"] and frames[0].data["reply"] is None
        (held_session,) = await on_session.take(1)
        (held_agent,) = await on_agent.take(1)
        assert held_session.payload["message"] == held_agent.payload["message"] == frames[0].data["message"]

        async with http.post(
            f"{agent_side}/workbench/api/sessions/split/release", json={"agent_id": "agent-1"}
        ) as answer:
            assert answer.status == 200
        await on_session.take(2)
        host, port = "127.0.0.1", chatbot.port
        sock = await asyncio.to_thread(raw_request, host, port, {"session_name": "split", "content": "hello"})
        await asyncio.to_thread(read_until, sock, b"event: chunk")
        leave(sock, "reset")
        customer, bot = await on_session.take(2)
        assert [customer.payload["message"]["role"], bot.payload["message"]["role"]] == ["customer", "bot"]
        assert bot.payload["message"]["content"] == RuleBasedResponder().answer("hello").text
    for process in (chatbot, workbench):
        log = process.log()
        assert "Traceback" not in log and " ERROR " not in log, log


class RamblingResponder(Responder):
    """Goes on past a message's bound, then asks for a person."""

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        for _ in range(100):
            yield "word " * 20
        yield Handoff("too long a story", "It rambled.")


async def test_a_reply_past_the_bound_is_cut_and_its_hand_off_kept(app_client: AppWithResponder) -> None:
    """A bot's reply longer than a message may be is cut at MAX_REPLY characters (chunks
    included), and a hand-off after the cut still happens."""
    client = await app_client(RamblingResponder())
    await create(client, "long")
    chunks, done = split(await chat_stream(client, {"session_name": "long", "content": "tell me"}))
    assert sum(len(c.data["text"]) for c in chunks) == MAX_REPLY
    assert len(done.data["reply"]["content"]) == MAX_REPLY
    assert done.data["session"]["status"] == "waiting_agent"
    assert done.data["session"]["handoff_summary"] == "It rambled."
