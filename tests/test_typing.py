"""Typing, both ways (docs/api.md, "Typing"): the customer's reaches the agent's view of the
conversation and the holding agent's reaches the customer; at most one per sender every 2 s
(more are 200 with ``sent: false`` and go nowhere), across processes; never in a history nor
replayed on a resume; refused for a closed conversation or an agent not holding it."""

from typing import Any

import aiohttp

from app.process.settings import Settings
from tests.support.api import CHATBOT, WORKBENCH, Http, act, call_json, create, escalate, send, session_events
from tests.support.app_server import MakeClient
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import SSEEvent, SSEStream, open_stream

QUIET = 0.3  # how long a stream that must hear nothing more is listened to


async def customer_types(http: Http, name: str, *, base: str = "", status: int = 200) -> dict[str, Any]:
    return await call_json(http, "POST", f"{base}{CHATBOT}/sessions/{name}/typing", None, status=status)


async def agent_types(
    http: Http, name: str, agent_id: str, *, base: str = "", status: int = 200
) -> dict[str, Any]:
    url = f"{base}{WORKBENCH}/sessions/{name}/typing"
    return await call_json(http, "POST", url, {"agent_id": agent_id}, status=status)


async def typing_of(stream: SSEStream) -> SSEEvent:
    event = await stream.next_of("typing", timeout=5.0)
    assert event.id is None, event  # ephemeral: no id
    return event


async def no_typing(stream: SSEStream) -> None:
    """Listened to for QUIET: no typing event."""
    heard = await stream.drain(QUIET, ambient=True)
    assert not [e for e in heard if e.type == "typing"], heard


async def held(http: Http, name: str, agent_id: str, base: str = "") -> None:
    await create(http, name, base=base)
    await escalate(http, name, base=base)
    await act(http, name, "takeover", agent_id, base=base)


async def test_both_ways_once_per_sender_per_window(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings, rate_limit=1000.0, rate_burst=1000)
    await held(client, "t1", "alice")
    async with (
        open_stream(client, session_events("t1")) as (customer, _),
        open_stream(client, session_events("t1", "workbench")) as (agent_view, _),
    ):
        assert await customer_types(client, "t1") == {"session_name": "t1", "sent": True}
        heard = await typing_of(agent_view)
        assert heard.payload == {"session_name": "t1", "who": "customer"}
        assert heard.data["source"] == "ai_chatbot"
        # Within 2 s: accepted, dropped.
        assert await customer_types(client, "t1") == {"session_name": "t1", "sent": False}
        assert await agent_types(client, "t1", "alice") == {"session_name": "t1", "sent": True}
        # Both sides' streams carry the conversation's channel: the customer's own signal
        # comes first (a client ignores its own side's), then the agent's.
        own = await typing_of(customer)
        assert own.payload == {"session_name": "t1", "who": "customer"}
        said = await typing_of(customer)
        assert said.payload == {"session_name": "t1", "who": "agent", "agent_id": "alice"}
        assert said.data["source"] == "agent_workbench"
        # The dropped ones reach nobody.
        assert await agent_types(client, "t1", "alice") == {"session_name": "t1", "sent": False}
        assert (await typing_of(agent_view)).payload["who"] == "agent"  # the one sent
        await no_typing(agent_view)
        await no_typing(customer)


async def test_never_in_a_history_nor_replayed(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    await held(client, "t2", "alice")
    await customer_types(client, "t2")
    await agent_types(client, "t2", "alice")
    # A stream resumed from the start holds the conversation's events, and no typing.
    headers = {"Last-Event-ID": "0-0"}
    async with open_stream(client, session_events("t2", "workbench"), headers=headers) as (stream, _):
        replayed = [e.type for e in await stream.drain(QUIET, ambient=True)]
        assert "status_change" in replayed and "typing" not in replayed, replayed


async def test_refused_where_nobody_may_type(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    await held(client, "t3", "alice")
    refused = await agent_types(client, "t3", "bob", status=409)  # not the holder
    assert refused["error"]["code"] == "conflict", refused
    await customer_types(client, "nobody", status=404)
    bad = await send(client, "POST", f"{CHATBOT}/sessions/bad!name/typing")
    assert bad.status == 400, bad
    await act(client, "t3", "close", "alice")
    closed = await customer_types(client, "t3", status=409)
    assert closed["error"]["message"] == "session is closed", closed
    await agent_types(client, "t3", "alice", status=409)


async def test_one_window_across_processes(server_process: StartServer, redis_url: str) -> None:
    """Two processes on one Redis: a customer's signal sent to one is heard on a stream of the
    other, and a second signal within 2 s is dropped whichever process it reaches."""
    one = server_process("--redis-url", redis_url, env=REDIS_ON)
    other = server_process("--redis-url", redis_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        await held(http, "t4", "alice", base=one.url)
        async with open_stream(http, other.url + session_events("t4", "workbench")) as (agent_view, _):
            assert (await customer_types(http, "t4", base=one.url))["sent"] is True
            assert (await typing_of(agent_view)).payload == {"session_name": "t4", "who": "customer"}
            assert (await customer_types(http, "t4", base=other.url))["sent"] is False
            await no_typing(agent_view)


async def test_both_ways_across_a_split_deployment(server_process: StartServer, redis_url: str) -> None:
    """A chatbot process and a workbench process: each side's typing reaches the other side's
    stream, and neither is in a resume from the start on either side."""
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    customer_url = chatbot.url + session_events("t5")
    agent_url = workbench.url + session_events("t5", "workbench")
    async with aiohttp.ClientSession() as http:
        await create(http, "t5", base=chatbot.url)
        await escalate(http, "t5", base=chatbot.url)
        await act(http, "t5", "takeover", "alice", base=workbench.url)
        async with (
            open_stream(http, customer_url) as (customer, _),
            open_stream(http, agent_url) as (agent, _),
        ):
            assert (await customer_types(http, "t5", base=chatbot.url))["sent"] is True
            assert (await typing_of(agent)).payload == {"session_name": "t5", "who": "customer"}
            assert (await agent_types(http, "t5", "alice", base=workbench.url))["sent"] is True
            heard = (await typing_of(customer)).payload
            if heard["who"] == "customer":  # its own side's, which a client ignores
                heard = (await typing_of(customer)).payload
            assert heard == {"session_name": "t5", "who": "agent", "agent_id": "alice"}
        since_start = {"Last-Event-ID": "0-0"}
        for url in (customer_url, agent_url):
            async with open_stream(http, url, headers=since_start) as (resumed, _):
                await no_typing(resumed)
