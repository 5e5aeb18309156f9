"""--bot webhook against the example bot service (examples/webhook_bot.py) as a real process:
signed calls, streamed and JSON answers, a hand-off with its summary, typing while the bot
thinks, and the failure policy (docs/bots.md): a bot that refuses, is away or is too slow
hands the conversation to a person with reason bot_unavailable, and the breaker stops calling
it. The app runs in the test (memory, and a real redis-server)."""

import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.process.settings import Settings
from handlers.bot_reply import PASSING_ON, SORRY
from tests.support.api import CHATBOT, call_json, create, session_events
from tests.support.app_server import AppClient, MakeClient
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
