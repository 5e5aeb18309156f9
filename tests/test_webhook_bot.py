"""--bot webhook against the example bot service (examples/webhook_bot.py) as a real process:
signed calls, streamed and JSON answers, a hand-off with its summary, typing while the bot
thinks, and the failure policy (docs/bots.md): a bot that refuses, is away or is too slow
hands the conversation to a person with reason bot_unavailable, and the breaker stops calling
it. The app runs in the test (memory, and a real redis-server).

Then WebhookResponder alone (app/bots/webhook_bot.py), the wire contract and each failure kind:
against the example, and against small servers in the test for the answers it never gives."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.bots.webhook_bot import MAX_ANSWER, MAX_EVENT, WebhookResponder
from app.domain.bot import BotFailure, Handoff, ReplyPart
from app.domain.store import Message, Session
from app.process.settings import Settings
from app.web.signing import SIGNATURE_HEADER, BadSignature, verify
from handlers.bot_reply import PASSING_ON, SORRY
from tests.support.api import CHATBOT, call_json, create, session_events
from tests.support.app_server import AppClient, MakeClient
from tests.support.bots import transcripts_of
from tests.support.metrics import by_label, scrape
from tests.support.processes import PeerProcess, free_port
from tests.support.sse import open_stream, read_frames

SECRET = "s" * 40


@pytest.fixture(scope="module")
def webhook_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcess]:
    """The example bot, streaming a word every 0.01 s (it keeps no state between calls)."""
    logs = tmp_path_factory.mktemp("webhook-bot")
    with PeerProcess("examples.webhook_bot", "--secret", SECRET, "--pace", "0.01", log_dir=logs) as bot:
        yield bot


@pytest.fixture(scope="module")
def slow_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcess]:
    """The same, a word every 0.12 s: long enough to be seen typing, too slow for a 0.05 s
    first-token timeout."""
    logs = tmp_path_factory.mktemp("slow-bot")
    with PeerProcess("examples.webhook_bot", "--secret", SECRET, "--pace", "0.12", log_dir=logs) as bot:
        yield bot


async def bot_app(make_client: MakeClient, settings: Settings, url: str, **changes: Any) -> AppClient:
    return await make_client(settings, bot="webhook", bot_url=url, bot_secret=SECRET, **changes)


async def chat_stream(client: AppClient, name: str, content: str) -> list[Any]:
    body = {"session_name": name, "content": content}
    async with client.post(f"{CHATBOT}/chat/stream", json=body) as response:
        assert response.status == 200, await response.text()
        return await read_frames(response)


async def test_a_streamed_answer_comes_word_by_word_with_typing_before_it(
    make_client: MakeClient, settings: Settings, slow_bot: PeerProcess
) -> None:
    client = await bot_app(make_client, settings, f"{slow_bot.url}/bot")
    await create(client, "wh-1")
    async with open_stream(client, session_events("wh-1")) as (customer, _):
        frames = await chat_stream(client, "wh-1", "where is my parcel?")
        typing = await customer.next_of("typing")
        reply = await customer.next_of("new_message")
        while reply.payload["message"]["role"] != "bot":
            reply = await customer.next_of("new_message")
    chunks, done = frames[:-1], frames[-1]
    assert done.event == "done" and len(chunks) > 3
    text = "".join(c.data["text"] for c in chunks)
    assert text == "You asked: 'where is my parcel?'. Here is what I know about that."
    assert done.data["reply"]["content"] == text == reply.payload["message"]["content"]
    assert typing.id is None and typing.payload == {"session_name": "wh-1", "who": "bot"}


async def test_the_bot_hands_over_with_a_summary(
    make_client: MakeClient, settings: Settings, webhook_bot: PeerProcess
) -> None:
    client = await bot_app(make_client, settings, f"{webhook_bot.url}/bot")
    await create(client, "wh-2")
    first = await call_json(
        client, "POST", f"{CHATBOT}/chat", {"session_name": "wh-2", "content": "my card was charged twice"}
    )
    assert first["session"]["status"] == "bot_active"
    answer = await call_json(
        client, "POST", f"{CHATBOT}/chat", {"session_name": "wh-2", "content": "a person please"}
    )
    session = answer["session"]
    assert session["status"] == "waiting_agent"
    assert session["escalation_reason"] == "the customer asked for a person"
    assert session["handoff_summary"] == "Customer wrote: my card was charged twice / a person please"
    handoffs = by_label(await scrape(client), "switchboard_handoffs_total", "reason")
    assert handoffs == {"bot": 1.0}


@pytest.mark.parametrize("case", ["wrong_secret", "away", "too_slow"])
async def test_a_failing_bot_hands_over_as_bot_unavailable(
    make_client: MakeClient, settings: Settings, webhook_bot: PeerProcess, slow_bot: PeerProcess, case: str
) -> None:
    changes: dict[str, Any] = {}
    url = f"{webhook_bot.url}/bot"
    if case == "away":
        url = f"http://127.0.0.1:{free_port()}/bot"
    elif case == "too_slow":
        url = f"{slow_bot.url}/bot"
        changes["bot_first_token_timeout"] = 0.05  # the example waits --pace before each word
    client = await make_client(
        settings,
        bot="webhook",
        bot_url=url,
        bot_secret="x" * 40 if case == "wrong_secret" else SECRET,
        **changes,
    )
    await create(client, "wh-3")
    started = time.monotonic()
    frames = await chat_stream(client, "wh-3", "hello?")
    assert time.monotonic() - started < 5.0
    done = frames[-1]
    assert done.event == "done", frames
    assert done.data["reply"]["content"] == f"{SORRY} {PASSING_ON}"
    assert done.data["session"]["status"] == "waiting_agent"
    assert done.data["session"]["escalation_reason"] == "bot_unavailable"
    kind = {"wrong_secret": "status", "away": "connect", "too_slow": "timeout"}[case]
    summary = f"The bot could not answer ({kind}). The customer wrote: hello?"
    assert done.data["session"]["handoff_summary"] == summary
    samples = await scrape(client)
    assert by_label(samples, "switchboard_bot_errors_total", "kind") == {kind: 1.0}
    assert by_label(samples, "switchboard_handoffs_total", "reason") == {"bot_unavailable": 1.0}


async def test_the_breaker_stops_calling_a_failing_bot(make_client: MakeClient, settings: Settings) -> None:
    """Two failures open the breaker (--bot-breaker-failures 2): the third conversation is
    handed over without a call, until the cooldown has passed."""
    client = await make_client(
        settings,
        bot="webhook",
        bot_url=f"http://127.0.0.1:{free_port()}/bot",
        bot_breaker_failures=2,
        bot_breaker_cooldown=60.0,
    )
    for n in range(3):
        await create(client, f"wh-b{n}")
        answer = await call_json(
            client, "POST", f"{CHATBOT}/chat", {"session_name": f"wh-b{n}", "content": "hi"}
        )
        assert answer["session"]["escalation_reason"] == "bot_unavailable"
    samples = await scrape(client)
    assert by_label(samples, "switchboard_bot_errors_total", "kind") == {"connect": 2.0, "circuit_open": 1.0}
    assert by_label(samples, "switchboard_bot_circuit", "state") == {
        "closed": 0.0,
        "open": 1.0,
        "half_open": 0.0,
    }


# --------------------------------------------------------------------------------------------
# WebhookResponder alone

SESSION: Session = {
    "session_name": "wr-1",
    "status": "bot_active",
    "agent_id": None,
    "created_at": 1_700_000_000,
    "updated_at": 1_700_000_005,
    "escalation_reason": None,
    "status_seq": 1,
    "incarnation": "i1",
}
HISTORY: list[Message] = [
    {
        "id": "m1",
        "role": "customer",
        "content": "my card was charged twice",
        "agent_id": None,
        "created_at": 1,
    },
    {"id": "m2", "role": "bot", "content": "Sorry to hear that.", "agent_id": None, "created_at": 2},
    {"id": "m3", "role": "agent", "content": "Looking into it.", "agent_id": "agent-1", "created_at": 3},
]


def customer(content: str, message_id: str = "m9") -> Message:
    return {"id": message_id, "role": "customer", "content": content, "agent_id": None, "created_at": 9}


class JsonOnly(WebhookResponder):
    """Accepts JSON only, as a client that cannot stream would: the example answers in one
    piece."""

    def _headers(self, body: bytes) -> dict[str, str]:
        return {**super()._headers(body), "Accept": "application/json"}


@pytest.fixture
async def responders() -> AsyncIterator[Callable[..., WebhookResponder]]:
    """Makes WebhookResponders (the secret SECRET and no transcript unless told), closed after
    the test."""
    made: list[WebhookResponder] = []

    def make(url: str, json_only: bool = False, **changes: Any) -> WebhookResponder:
        options: dict[str, Any] = {
            "secret": SECRET,
            "transcripts": transcripts_of(SESSION["session_name"], []),
            **changes,
        }
        made.append((JsonOnly if json_only else WebhookResponder)(url=url, **options))
        return made[-1]

    yield make
    for responder in made:
        await responder.close()


async def answer_of(responder: WebhookResponder, content: str = "hello?") -> list[ReplyPart]:
    async with asyncio.timeout(5):
        return [part async for part in responder.stream(SESSION, customer(content))]


async def failure_of(responder: WebhookResponder, content: str = "hello?") -> BotFailure:
    with pytest.raises(BotFailure) as caught:
        await answer_of(responder, content)
    return caught.value


@asynccontextmanager
async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 answering POST /bot with ``handler``; its URL."""
    app = web.Application()
    app.router.add_post("/bot", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/bot"))


@asynccontextmanager
async def raw_serving(answer: bytes) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that reads the request and writes ``answer`` as it is (an
    HTTP response no aiohttp handler would produce), then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/bot"
    finally:
        server.close()
        await server.wait_closed()


def replying(
    status: int, body: bytes, content_type: str = "application/json"
) -> Callable[..., Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type=content_type)

    return handler


async def test_the_request_is_signed_and_carries_the_transcript_before_the_message(
    responders: Callable[..., WebhookResponder],
) -> None:
    """The receiving side checks the signature as app.web.signing does; the transcript is the
    newest --bot-context messages before this one, oldest first (the store's list ends with
    the message itself, dropped by id)."""
    calls: list[tuple[bytes, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append((body, request.headers))
        verify([SECRET.encode()], body, request.headers.get(SIGNATURE_HEADER), time.time())
        return web.json_response({"text": "ok"})

    asked: list[int] = []
    message = customer("is it refunded?")
    async with serving(handler) as url:
        responder = responders(
            url,
            transcripts=transcripts_of(SESSION["session_name"], [*HISTORY, message], asked),
            context_messages=2,
        )
        assert await answer_of(responder, "is it refunded?") == ["ok"]
        unsigned = responders(url, secret=None, context_messages=0)
        with pytest.raises(BotFailure):  # the handler refuses the missing signature: 500
            await answer_of(unsigned)
    assert asked == [3]  # one more than the context: the message itself is among them
    (body, headers), (unsigned_body, unsigned_headers) = calls
    assert orjson.loads(body) == {
        "session": {
            "session_name": "wr-1",
            "status": "bot_active",
            "agent_id": None,
            "created_at": 1_700_000_000,
        },
        "message": dict(message),
        "transcript": [dict(m) for m in HISTORY[1:]],
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "text/event-stream, application/json"
    assert headers["User-Agent"] == "Switchboard"
    with pytest.raises(BadSignature):  # the signature covers the body
        verify([SECRET.encode()], body + b" ", headers[SIGNATURE_HEADER], time.time())
    assert SIGNATURE_HEADER not in unsigned_headers
    assert orjson.loads(unsigned_body)["transcript"] == []


async def test_the_example_answers_json_and_streams_piece_by_piece(
    responders: Callable[..., WebhookResponder], webhook_bot: PeerProcess, slow_bot: PeerProcess
) -> None:
    """Asked for JSON only (a bot service that cannot stream), the example answers in one
    piece; otherwise word by word, each piece yielded as it arrives (0.12 s apart)."""
    text = "You asked: 'where is my parcel?'. Here is what I know about that."
    responder = responders(f"{webhook_bot.url}/bot", json_only=True)
    assert await answer_of(responder, "where is my parcel?") == [text]

    streamed = responders(f"{slow_bot.url}/bot")
    pieces: list[tuple[float, ReplyPart]] = []
    async with asyncio.timeout(5):
        async for part in streamed.stream(SESSION, customer("where is my parcel?")):
            pieces.append((time.monotonic(), part))
    words = [part for _, part in pieces]
    assert len(words) > 3 and all(isinstance(w, str) for w in words)
    assert "".join(str(w) for w in words) == text
    assert words[:3] == ["You ", "asked: ", "'where "]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(pieces)]
    assert min(gaps) > 0.05  # not buffered to the end: each came when it was written


@pytest.mark.parametrize("stream", [False, True])
async def test_the_example_hands_off_with_a_reason_and_a_summary(
    responders: Callable[..., WebhookResponder], webhook_bot: PeerProcess, stream: bool
) -> None:
    responder = responders(
        f"{webhook_bot.url}/bot",
        transcripts=transcripts_of(SESSION["session_name"], HISTORY),
        json_only=not stream,
    )
    parts = await answer_of(responder, "can I talk to a person")
    handoff = Handoff(
        "the customer asked for a person",
        "Customer wrote: my card was charged twice / can I talk to a person",
    )
    assert parts[-1] == handoff
    texts = [p for p in parts[:-1] if isinstance(p, str)]
    assert "".join(texts) == "I'll bring in a colleague who can help. They will reply here."
    assert len(texts) == (12 if stream else 1)


@pytest.mark.parametrize("secret", ["x" * 40, None])
async def test_a_refused_signature_is_a_status_failure(
    responders: Callable[..., WebhookResponder], webhook_bot: PeerProcess, secret: str | None
) -> None:
    failure = await failure_of(responders(f"{webhook_bot.url}/bot", secret=secret))
    assert (failure.kind, failure.detail) == ("status", "401")


async def test_nobody_listening_is_a_connect_failure(responders: Callable[..., WebhookResponder]) -> None:
    failure = await failure_of(responders(f"http://127.0.0.1:{free_port()}/bot", connect_timeout=1.0))
    assert failure.kind == "connect"


async def test_silence_longer_than_the_read_timeout_is_a_timeout(
    responders: Callable[..., WebhookResponder], slow_bot: PeerProcess
) -> None:
    """The example waits 0.12 s before each word; nothing may come for more than 0.05 s."""
    started = time.monotonic()
    failure = await failure_of(responders(f"{slow_bot.url}/bot", read_timeout=0.05))
    assert failure.kind == "timeout"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limited"), (500, "status"), (404, "status"), (302, "status")]
)
async def test_a_status_other_than_2xx_fails(
    responders: Callable[..., WebhookResponder], status: int, kind: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"text": "not this"}, status=status, headers={"Location": "/elsewhere"})

    async with serving(handler) as url:
        failure = await failure_of(responders(url))
    assert (failure.kind, failure.detail) == (kind, str(status))


SSE = "text/event-stream"


@pytest.mark.parametrize(
    ("body", "content_type", "parts"),
    [
        (b'{"text": "Hi!"}', "application/json", ["Hi!"]),
        (b'{"text": "", "handoff": true, "reason": null}', "application/json", [Handoff(None, None)]),
        (b'{"text": "Hm.", "handoff": false, "reason": "ignored"}', "text/plain", ["Hm."]),
        (
            b": a comment\r\ndata: one\r\ndata: two\r\n\r\nevent: text\rdata:three\r\r"
            b"event: ping\ndata: ignored\n\nid: 7\nretry: 10\n\n"
            b'event: handoff\ndata: {"reason": "r", "summary": "s"}\n\nevent: done\n\ndata: after done\n\n',
            SSE,
            ["one\ntwo", "three", Handoff("r", "s")],
        ),
    ],
)
async def test_readable_answers(
    responders: Callable[..., WebhookResponder], body: bytes, content_type: str, parts: list[ReplyPart]
) -> None:
    async with serving(replying(200, body, content_type)) as url:
        assert await answer_of(responders(url)) == parts


async def test_a_json_answer_written_in_pieces_is_read_whole(
    responders: Callable[..., WebhookResponder],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for piece in (b'{"text": "in ', b"two", b' pieces"}'):
            await response.write(piece)
            await asyncio.sleep(0.02)
        return response

    async with serving(handler) as url:
        assert await answer_of(responders(url)) == ["in two pieces"]


@pytest.mark.parametrize(
    ("body", "content_type", "kind"),
    [
        (b"Hello there", "text/plain", "unreadable"),
        (b"", "application/json", "unreadable"),
        (b'["Hi"]', "application/json", "unreadable"),
        (b'{"text": 5}', "application/json", "unreadable"),
        (b'{"handoff": true}', "application/json", "unreadable"),
        (b'{"text": "Hi", "handoff": "yes"}', "application/json", "unreadable"),
        (b'{"text": "Hi", "handoff": true, "reason": 3}', "application/json", "unreadable"),
        (b'{"text": "' + b"a" * MAX_ANSWER + b'"}', "application/json", "unreadable"),
        (b"data: Hi\n\nevent: handoff\ndata: not json\n\nevent: done\n\n", SSE, "unreadable"),
        (b'event: handoff\ndata: ["r"]\n\nevent: done\n\n', SSE, "unreadable"),
        (b"data: " + b"a" * MAX_EVENT + b"\n\nevent: done\n\n", SSE, "unreadable"),
        (b"data: a\n" * (MAX_EVENT // 2 + 1) + b"\nevent: done\n\n", SSE, "unreadable"),
        (b"data: Hi\n\ndata: there\n\n", SSE, "cut"),
        (b"data: Hi\n\nevent: done", SSE, "cut"),
        (b"", SSE, "cut"),
    ],
)
async def test_malformed_answers(
    responders: Callable[..., WebhookResponder], body: bytes, content_type: str, kind: str
) -> None:
    async with serving(replying(200, body, content_type)) as url:
        assert (await failure_of(responders(url))).kind == kind


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (b"", "connect"),  # closed without a word
        (b"garbage\r\n\r\n", "unreadable"),  # not HTTP
        (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"te', "cut"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a\r\ndata: Hi\n\n\r\n5\r\nda",
            "cut",
        ),
    ],
)
async def test_broken_responses(
    responders: Callable[..., WebhookResponder], answer: bytes, kind: str
) -> None:
    async with raw_serving(answer) as url:
        assert (await failure_of(responders(url))).kind == kind


async def test_a_closed_responder_can_be_used_again(
    responders: Callable[..., WebhookResponder], webhook_bot: PeerProcess
) -> None:
    responder = responders(f"{webhook_bot.url}/bot")
    await responder.close()  # before any use: nothing to close
    first = await answer_of(responder, "hi")
    await responder.close()
    assert await answer_of(responder, "hi") == first
