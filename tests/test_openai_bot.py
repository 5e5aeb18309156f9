"""--bot openai against a local process that speaks the Chat Completions streaming wire format
(tests/support/openai_wire.py: no model runs here, so this is the part replaced, and nothing
else): the context sent, streamed pieces, a hand-off by tool call in fragments, tokens counted,
and every way the endpoint can fail handed over as bot_unavailable. The app runs in the test
(memory, and a real redis-server).

Then OpenAIResponder alone (app/bots/openai_bot.py): what it sends, what it yields, and each
failure kind, against the same process and, for chunks no real endpoint sends, small servers in
the test."""

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.bots.openai_bot import HANDOFF_TOOL, MAX_REASON, UNREAD_REASON, OpenAIResponder
from app.domain.bot import BotFailure, Handoff, ReplyPart, Usage
from app.domain.store import Message, Role, Session
from app.process.settings import Settings
from handlers.bot_reply import PASSING_ON, SORRY
from tests.support.api import CHATBOT, act, agent_say, call_json, create
from tests.support.app_server import AppClient, MakeClient
from tests.support.bots import transcripts_of
from tests.support.metrics import by_label, scrape
from tests.support.processes import PeerProcess, free_port
from tests.support.sse import read_frames

KEY = "sk-local-test"


@pytest.fixture(scope="module")
def wire_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcess]:
    with PeerProcess("tests.support.openai_wire", log_dir=tmp_path_factory.mktemp("openai-wire")) as server:
        yield server


@pytest.fixture
async def wire(wire_process: PeerProcess) -> PeerProcess:
    """The endpoint, its script and its record of requests emptied for this test."""
    async with aiohttp.ClientSession() as http, http.post(f"{wire_process.url}/_reset") as answer:
        assert answer.status == 200
    return wire_process


async def script(wire: PeerProcess, *scenarios: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{wire.url}/_script", json=list(scenarios)) as answer,
    ):
        assert answer.status == 200


async def received(wire: PeerProcess) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{wire.url}/_requests") as answer:
        result: list[dict[str, Any]] = await answer.json()
        return result


async def openai_app(
    make_client: MakeClient, settings: Settings, wire: PeerProcess, **changes: Any
) -> AppClient:
    return await make_client(
        settings, bot="openai", bot_url=f"{wire.url}/v1", bot_model="local-model", bot_api_key=KEY, **changes
    )


async def say(client: AppClient, name: str, content: str) -> dict[str, Any]:
    return await call_json(client, "POST", f"{CHATBOT}/chat", {"session_name": name, "content": content})


async def test_the_context_and_a_streamed_answer(
    make_client: MakeClient, settings: Settings, wire: PeerProcess, tmp_path: Path
) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are the shop's assistant.\n")
    client = await openai_app(make_client, settings, wire, bot_prompt=str(prompt), bot_context=3)
    await create(client, "oa-1")
    await script(wire, {"text": ["Hello", "!"]}, {"text": ["Still ", "here."]}, {"text": ["Back ", "again."]})
    await say(client, "oa-1", "hi")
    await say(client, "oa-1", "anyone?")
    await act(client, "oa-1", "takeover", "agent-1")
    await agent_say(client, "oa-1", "agent-1", "An agent here.")
    await act(client, "oa-1", "release", "agent-1")
    body = {"session_name": "oa-1", "content": "thanks"}
    async with client.post(f"{CHATBOT}/chat/stream", json=body) as response:
        frames = await read_frames(response)
    assert [f.data["text"] for f in frames[:-1]] == ["Back ", "again."]
    assert frames[-1].data["reply"]["content"] == "Back again."
    requests = await received(wire)
    assert len(requests) == 3 and all(r["authorization"] == f"Bearer {KEY}" for r in requests)
    last = requests[-1]["body"]
    assert last["model"] == "local-model" and last["stream"] is True
    assert last["tools"][0]["function"]["name"] == "handoff_to_human"
    # The prompt, the newest 3 messages before this one (roles mapped), the new one.
    assert last["messages"] == [
        {"role": "system", "content": "You are the shop's assistant."},
        {"role": "user", "content": "anyone?"},
        {"role": "assistant", "content": "Still here."},
        {"role": "system", "content": "A human agent wrote to the customer: An agent here."},
        {"role": "user", "content": "thanks"},
    ]
    tokens = by_label(await scrape(client), "switchboard_bot_tokens_total", "kind")
    assert tokens == {"prompt": 33.0, "completion": 21.0}


@pytest.mark.parametrize("text", [[], ["Let me get a colleague."]])
async def test_the_model_hands_off_by_tool_call(
    make_client: MakeClient, settings: Settings, wire: PeerProcess, text: list[str]
) -> None:
    client = await openai_app(make_client, settings, wire)
    await create(client, "oa-2")
    handoff = {"reason": "refund over the limit", "summary": "Wants a refund of order 1234 (EUR 420)."}
    await script(wire, {"text": text, "handoff": handoff, "fragments": 5})
    answer = await say(client, "oa-2", "refund my order 1234 please")
    session = answer["session"]
    assert session["status"] == "waiting_agent"
    assert session["escalation_reason"] == handoff["reason"]
    assert session["handoff_summary"] == handoff["summary"]
    assert answer["reply"]["content"] == (
        text[0] if text else "I'm connecting you with a human agent. Please stay here."
    )


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        ({"status": 429}, "rate_limited"),
        ({"status": 500}, "status"),
        ({"cut": ["Half an ", "answer"]}, "cut"),
        ({"garbage": True}, "unreadable"),
        ({"text": ["late"], "first_delay": 1.0}, "timeout"),
    ],
)
async def test_a_failing_endpoint_hands_over_as_bot_unavailable(
    make_client: MakeClient, settings: Settings, wire: PeerProcess, scenario: dict[str, Any], kind: str
) -> None:
    client = await openai_app(make_client, settings, wire, bot_first_token_timeout=0.5)
    await create(client, "oa-3")
    await script(wire, scenario)
    answer = await say(client, "oa-3", "hello?")
    assert answer["session"]["escalation_reason"] == "bot_unavailable"
    assert answer["reply"]["content"].endswith(f"{SORRY} {PASSING_ON}")
    assert by_label(await scrape(client), "switchboard_bot_errors_total", "kind") == {kind: 1.0}


# --------------------------------------------------------------------------------------------
# OpenAIResponder alone, against the same endpoint (and small servers in the test for the
# answers it never gives)

SESSION: Session = {
    "session_name": "or-1",
    "status": "bot_active",
    "agent_id": None,
    "created_at": 1_700_000_000,
    "updated_at": 1_700_000_005,
    "escalation_reason": None,
    "status_seq": 1,
    "incarnation": "i1",
}
PROMPT = "You are the shop's assistant."


def said(role: Role, content: str, message_id: str) -> Message:
    return {
        "id": message_id,
        "role": role,
        "content": content,
        "agent_id": "agent-1" if role == "agent" else None,
        "created_at": 1,
    }


HISTORY = [
    said("customer", "my card was charged twice", "m1"),
    said("bot", "Sorry to hear that.", "m2"),
    said("agent", "Looking into it.", "m3"),
]


@pytest.fixture
async def responders() -> AsyncIterator[Callable[..., OpenAIResponder]]:
    """Makes OpenAIResponders (the key KEY, PROMPT, no transcript unless told), closed after
    the test."""
    made: list[OpenAIResponder] = []

    def make(base_url: str, **changes: Any) -> OpenAIResponder:
        options: dict[str, Any] = {
            "api_key": KEY,
            "model": "local-model",
            "system_prompt": PROMPT,
            "transcripts": transcripts_of(SESSION["session_name"], []),
            **changes,
        }
        made.append(OpenAIResponder(base_url=base_url, **options))
        return made[-1]

    yield make
    for responder in made:
        await responder.close()


async def answer_of(responder: OpenAIResponder, message: Message | None = None) -> list[ReplyPart]:
    async with asyncio.timeout(5):
        return [part async for part in responder.stream(SESSION, message or said("customer", "hi?", "m9"))]


async def failure_of(responder: OpenAIResponder) -> BotFailure:
    with pytest.raises(BotFailure) as caught:
        await answer_of(responder)
    return caught.value


async def test_the_request_carries_the_prompt_the_conversation_and_the_key(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess
) -> None:
    """The newest context_messages before the new one (the transcript ends with the new one
    itself, dropped by id), roles mapped, the new message last; the key as a bearer token."""
    asked: list[int] = []
    message = said("customer", "is it refunded?", "m9")
    responder = responders(
        f"{wire.url}/v1",
        transcripts=transcripts_of(SESSION["session_name"], [*HISTORY, message], asked),
        context_messages=2,
    )
    assert await answer_of(responder, message) == ["is it refunded?", Usage(11, 7)]  # the echo
    assert asked == [3]
    (request,) = await received(wire)
    assert request["authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "local-model"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": PROMPT},
        {"role": "assistant", "content": "Sorry to hear that."},
        {"role": "system", "content": "A human agent wrote to the customer: Looking into it."},
        {"role": "user", "content": "is it refunded?"},
    ]
    (tool,) = body["tools"]
    assert tool == HANDOFF_TOOL and tool["function"]["name"] == "handoff_to_human"
    parameters = tool["function"]["parameters"]
    assert parameters["required"] == ["reason", "summary"]
    assert all(field["description"] for field in parameters["properties"].values())


async def test_the_context_keeps_the_newest_messages_within_the_token_budget(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess
) -> None:
    """10 tokens: 40 characters. The new message (12) always, then the newest earlier ones
    while they fit: "b" * 20 does, "c" * 12 no longer (8 left), and nothing older than it
    either ("d", 1 character, would). An over-long new message is cut to the budget alone;
    the prompt is outside the budget."""
    history = [
        said("customer", "d", "m1"),
        said("bot", "c" * 12, "m2"),
        said("customer", "b" * 20, "m3"),
    ]
    long_prompt = "p" * 1000
    responder = responders(
        f"{wire.url}/v1",
        transcripts=transcripts_of(SESSION["session_name"], history),
        context_tokens=10,
        system_prompt=long_prompt,
    )
    await answer_of(responder, said("customer", "a" * 12, "m9"))
    await answer_of(responder, said("customer", "x" * 100, "m9"))
    first, second = [request["body"]["messages"] for request in await received(wire)]
    assert first == [
        {"role": "system", "content": long_prompt},
        {"role": "user", "content": "b" * 20},
        {"role": "user", "content": "a" * 12},
    ]
    assert second == [{"role": "system", "content": long_prompt}, {"role": "user", "content": "x" * 40}]


async def test_no_earlier_message_with_a_context_of_none(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess
) -> None:
    responder = responders(
        f"{wire.url}/v1", transcripts=transcripts_of(SESSION["session_name"], HISTORY), context_messages=0
    )
    await answer_of(responder)
    (request,) = await received(wire)
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]


async def test_pieces_are_yielded_in_order_as_they_arrive(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess
) -> None:
    await script(wire, {"text": ["Your ", "parcel ", "", "left ", "today."], "delay": 0.06})
    pieces: list[tuple[float, ReplyPart]] = []
    async with asyncio.timeout(5):
        async for part in responders(f"{wire.url}/v1").stream(SESSION, said("customer", "parcel?", "m9")):
            pieces.append((time.monotonic(), part))
    parts = [part for _, part in pieces]
    assert parts == ["Your ", "parcel ", "left ", "today.", Usage(11, 7)]  # the empty one skipped
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(pieces[:4])]
    assert min(gaps) > 0.03  # not buffered to the end


@pytest.mark.parametrize(("text", "fragments"), [([], 1), ([], 7), (["Let me get ", "a colleague."], 4)])
async def test_a_tool_call_in_fragments_is_a_handoff(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess, text: list[str], fragments: int
) -> None:
    handoff = {"reason": "refund over the limit", "summary": "Wants a refund of order 1234 (EUR 420)."}
    await script(wire, {"text": text, "handoff": handoff, "fragments": fragments})
    parts = await answer_of(responders(f"{wire.url}/v1"))
    assert parts == [*text, Usage(11, 7), Handoff(handoff["reason"], handoff["summary"])]


@pytest.mark.parametrize(
    ("arguments", "handoff"),
    [
        ('{"reason": "angry", "summ', Handoff(UNREAD_REASON, None)),
        ('["angry"]', Handoff(UNREAD_REASON, None)),
        ("", Handoff(UNREAD_REASON, None)),
        ('{"reason": "", "summary": "s"}', Handoff(UNREAD_REASON, "s")),
        ('{"reason": "r", "summary": 3}', Handoff("r", None)),
        (json.dumps({"reason": "r" * 2000, "summary": "s"}), Handoff("r" * MAX_REASON, "s")),
    ],
)
async def test_a_handoff_whose_arguments_cannot_be_read_still_hands_off(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess, arguments: str, handoff: Handoff
) -> None:
    await script(wire, {"handoff": arguments, "fragments": 3})
    assert (await answer_of(responders(f"{wire.url}/v1")))[-1] == handoff


async def test_other_tools_and_early_ends_are_not_failures(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess
) -> None:
    await script(
        wire,
        {"text": ["Checking."], "handoff": {"order": 1}, "tool_name": "lookup_order"},
        {"text": ["Half an"], "finish": "length"},
        {"text": ["Hm"], "finish": "content_filter"},
    )
    responder = responders(f"{wire.url}/v1")
    assert await answer_of(responder) == ["Checking.", Usage(11, 7)]
    assert await answer_of(responder) == ["Half an", Usage(11, 7)]
    assert await answer_of(responder) == ["Hm", Usage(11, 7)]


@pytest.mark.parametrize(
    ("scenario", "kind", "detail"),
    [
        ({"status": 429}, "rate_limited", "429"),
        ({"status": 500}, "status", "500"),
        ({"status": 401}, "status", "401"),
        ({"cut": ["Half an ", "answer"]}, "cut", None),
        ({"cut": []}, "cut", None),
        ({"text": ["All", " of it"], "finish": None}, "cut", None),
        ({"text": ["Half"], "error_event": True}, "cut", None),
        ({"garbage": True}, "unreadable", None),
    ],
)
async def test_a_failing_endpoint_is_a_bot_failure_of_its_kind(
    responders: Callable[..., OpenAIResponder],
    wire: PeerProcess,
    scenario: dict[str, Any],
    kind: str,
    detail: str | None,
) -> None:
    await script(wire, scenario)
    failure = await failure_of(responders(f"{wire.url}/v1"))
    assert failure.kind == kind
    if detail is not None:
        assert failure.detail == detail
    assert KEY not in str(failure) and "hi?" not in str(failure)


async def test_nobody_listening_is_a_connect_failure(responders: Callable[..., OpenAIResponder]) -> None:
    failure = await failure_of(responders(f"http://127.0.0.1:{free_port()}/v1", connect_timeout=1.0))
    assert failure.kind == "connect"


async def test_silence_longer_than_the_read_timeout_is_a_timeout(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess
) -> None:
    """The headers come at once, the first chunk only after 1 s."""
    await script(wire, {"text": ["late"], "first_delay": 1.0}, {"text": ["in time"], "first_delay": 0.05})
    started = time.monotonic()
    responder = responders(f"{wire.url}/v1", read_timeout=0.2)
    assert (await failure_of(responder)).kind == "timeout"
    assert time.monotonic() - started < 0.9
    assert await answer_of(responder) == ["in time", Usage(11, 7)]


@asynccontextmanager
async def serving(body: bytes, content_type: str = "text/event-stream") -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 answering every completion with ``body``; its base URL."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/v1"))


def events(*bodies: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(body).encode() + b"\n\n" for body in bodies) + b"data: [DONE]\n\n"


def choice(delta: Any, finish: Any = "stop") -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


SSE = "text/event-stream"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b'{"object": "chat.completion", "choices": []}', "application/json", id="json"),
        pytest.param(events([1, 2]), SSE, id="a list"),
        pytest.param(events(None), SSE, id="null"),
        pytest.param(events({"choices": "abc"}), SSE, id="choices"),
        pytest.param(events(choice("text")), SSE, id="delta"),
        pytest.param(events(choice({"content": 5})), SSE, id="content"),
        pytest.param(events(choice({"tool_calls": {"index": 0}})), SSE, id="tool_calls"),
        pytest.param(events(choice({"tool_calls": [{"function": {"name": "x"}}]})), SSE, id="no index"),
        pytest.param(events(choice({"tool_calls": [{"index": 0, "function": {"name": 3}}]})), SSE, id="name"),
        pytest.param(events(choice({"content": "Hi"}, finish=7)), SSE, id="finish_reason"),
        pytest.param(b"data: \xff\xfe\n\n", SSE, id="utf-8"),
    ],
)
async def test_malformed_chunks_are_unreadable(
    responders: Callable[..., OpenAIResponder], body: bytes, content_type: str
) -> None:
    async with serving(body, content_type) as url:
        assert (await failure_of(responders(url))).kind == "unreadable"


async def test_lenient_where_only_counting_depends_on_it(
    responders: Callable[..., OpenAIResponder],
) -> None:
    """A usage with counts that are not counts is 0 tokens; a whole tool call without an
    index (as some servers send) still counts; a name repeated in every piece is one name."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "handoff_to_human", "arguments": '{"reason"'},
    }
    rest = {"id": "call_1", "function": {"name": "handoff_to_human", "arguments": ': "r"}'}}
    body = events(
        choice({"content": "Hi", "tool_calls": [call]}, finish=None),
        choice({"tool_calls": [rest]}, finish="tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": "many", "completion_tokens": -1}},
    )
    async with serving(body) as url:
        assert await answer_of(responders(url)) == ["Hi", Usage(0, 0), Handoff("r", None)]


async def test_a_connection_lost_after_the_headers_is_cut(
    responders: Callable[..., OpenAIResponder],
) -> None:
    """Before any chunk: the answer had begun, so it is not a connect failure."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        assert (await failure_of(responders(f"http://127.0.0.1:{port}/v1"))).kind == "cut"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_closed_responder_can_be_used_again(
    responders: Callable[..., OpenAIResponder], wire: PeerProcess
) -> None:
    responder = responders(f"{wire.url}/v1")
    first = await answer_of(responder)
    await responder.close()
    await responder.close()  # twice: nothing more to close
    assert await answer_of(responder) == first == ["hi?", Usage(11, 7)]
