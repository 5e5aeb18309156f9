"""--bot openai against a local process that speaks the Chat Completions streaming wire format
(tests/support/openai_wire.py: no model runs here, so this is the part replaced, and nothing
else): the context sent, streamed pieces, a hand-off by tool call in fragments, tokens counted,
and every way the endpoint can fail handed over as bot_unavailable. The app runs in the test
(memory, and a real redis-server)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.process.settings import Settings
from handlers.bot_reply import PASSING_ON, SORRY
from tests.support.api import CHATBOT, act, agent_say, call_json, create
from tests.support.app_server import AppClient, MakeClient
from tests.support.metrics import by_label, scrape
from tests.support.processes import PeerProcess
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
