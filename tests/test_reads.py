"""Read receipts (docs/api.md, "Read receipts"): the customer or the agent holding a
conversation marks how far it has read; the other side hears ``read`` (resumable), and the
agents' list shows how many customer messages no agent has read. The last test does it through
a split deployment (a chatbot process and a workbench process on one Redis)."""

import asyncio
from typing import Any

import aiohttp

from app.process.settings import Settings
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    Http,
    act,
    agent_say,
    call_json,
    chat,
    create,
    escalate,
    get_session,
    read_up_to,
    send,
    session_events,
    transcript,
)
from tests.support.app_server import MakeClient
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import open_stream

QUIET = 0.3


async def held_by(http: Http, name: str, agent_id: str, *, chatbot: str = "", workbench: str = "") -> None:
    """A conversation with two customer messages (and the bot's answers), held by ``agent_id``."""
    await create(http, name, base=chatbot)
    await chat(http, name, "hello", base=chatbot)
    await escalate(http, name, base=chatbot)
    await act(http, name, "takeover", agent_id, base=workbench)


def ids_of(messages: list[dict[str, Any]], role: str) -> list[str]:
    return [m["id"] for m in messages if m["role"] == role]


async def test_each_side_reads_and_the_other_hears(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    await held_by(client, "r1", "alice")
    for text in ("my order is late", "order 1234", "are you there?"):
        await chat(client, "r1", text)
    assert (await get_session(client, "r1", "workbench"))["unread"] == 4  # "hello" too
    customer_said = ids_of(await transcript(client, "r1", "workbench"), "customer")
    async with (
        open_stream(client, session_events("r1")) as (customer, _),
        open_stream(client, session_events("r1", "workbench")) as (agent_view, _),
    ):
        after = await read_up_to(client, "r1", customer_said[2], "alice")
        assert after["read"] == {"agent": customer_said[2]} and after["unread"] == 1, after
        event = await customer.next_of("read", timeout=5.0)
        expected = {"session_name": "r1", "reader": "agent", "agent_id": "alice", "up_to": customer_said[2]}
        assert event.payload == expected and event.id is not None
        assert event.data["source"] == "agent_workbench"
        # Backwards or in place: nothing changes, nothing is said.
        for earlier in (customer_said[1], customer_said[2]):
            again = await read_up_to(client, "r1", earlier, "alice")
            assert again["read"] == {"agent": customer_said[2]} and again["unread"] == 1
        said = (await agent_say(client, "r1", "alice", "checking"))["message"]
        seen = await read_up_to(client, "r1", said["id"])
        assert seen["read"] == {"agent": customer_said[2], "customer": said["id"]}
        assert seen["unread"] == 1  # the customer's reading changes nothing of the agents'
        # Both sides' streams carry both reads (a client ignores its own side's).
        reads = [e for e in await agent_view.drain(QUIET) if e.type == "read"]
        assert [e.payload["reader"] for e in reads] == ["agent", "customer"]
        assert reads[1].payload == {"session_name": "r1", "reader": "customer", "up_to": said["id"]}
        assert reads[1].data["source"] == "ai_chatbot"
        assert [e.payload["reader"] for e in await customer.drain(QUIET) if e.type == "read"] == ["customer"]
    listed = await call_json(client, "GET", f"{WORKBENCH}/sessions?status=agent_active")
    assert [(s["session_name"], s["unread"]) for s in listed["sessions"]] == [("r1", 1)]
    await chat(client, "r1", "hello again")
    assert (await get_session(client, "r1", "workbench"))["unread"] == 2
    # A resume from the start replays both reads (they are state, with ids).
    since_start = {"Last-Event-ID": "0-0"}
    async with open_stream(client, session_events("r1"), headers=since_start) as (resumed, _):
        replayed = [e.payload["reader"] for e in await resumed.drain(QUIET) if e.type == "read"]
    assert replayed == ["agent", "customer"]


async def test_what_a_read_may_name(make_client: MakeClient, settings: Settings) -> None:
    """Only the holder reads for the agents; a customer never names a note; an unknown id, a
    malformed one or an unknown key is a 400 that changes nothing."""
    client = await make_client(settings)
    await held_by(client, "r2", "alice")
    hello = ids_of(await transcript(client, "r2"), "customer")[0]
    note = await call_json(
        client, "POST", f"{WORKBENCH}/sessions/r2/notes", {"agent_id": "bob", "content": "vip"}
    )
    refusals: list[tuple[str, dict[str, Any], int]] = [
        (f"{WORKBENCH}/sessions/r2/read", {"agent_id": "bob", "up_to": hello}, 409),
        (f"{WORKBENCH}/sessions/r2/read", {"agent_id": "alice", "up_to": "0" * 16}, 400),
        (f"{WORKBENCH}/sessions/r2/read", {"agent_id": "alice"}, 400),
        (f"{WORKBENCH}/sessions/nobody/read", {"agent_id": "alice", "up_to": hello}, 404),
        (f"{CHATBOT}/sessions/r2/read", {"up_to": note["message"]["id"]}, 400),
        (f"{CHATBOT}/sessions/r2/read", {"up_to": hello.upper()}, 400),
        (f"{CHATBOT}/sessions/r2/read", {"up_to": hello, "extra": 1}, 400),
        (f"{CHATBOT}/sessions/r2/read", {"up_to": 7}, 400),
    ]
    for url, body, status in refusals:
        reply = await send(client, "POST", url, body)
        assert reply.status == status and reply.body["error"]["code"], (url, body, reply.body)
    session = await get_session(client, "r2", "workbench")
    assert "read" not in session and session["unread"] == 1
    # The agent may read up to a note (its transcript has them): nothing of the customer's follows.
    assert (await read_up_to(client, "r2", note["message"]["id"], "alice"))["unread"] == 0


async def test_racing_reads_and_messages_keep_the_count(make_client: MakeClient, settings: Settings) -> None:
    """Whatever the interleaving, unread is the customer messages after the agent's read."""
    client = await make_client(settings)
    await held_by(client, "r3", "alice")
    for round_ in range(3):
        said = ids_of(await transcript(client, "r3", "workbench"), "customer")
        await asyncio.gather(
            *(chat(client, "r3", f"message {round_}.{n}") for n in range(8)),
            *(read_up_to(client, "r3", up_to, "alice") for up_to in said[-3:]),
        )
        session = await get_session(client, "r3", "workbench")
        customer_said = ids_of(await transcript(client, "r3", "workbench"), "customer")
        after_read = customer_said[customer_said.index(session["read"]["agent"]) + 1 :]
        assert session["unread"] == len(after_read), (session, customer_said)


async def test_split_deployment(server_process: StartServer, redis_url: str) -> None:
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    sides = {"chatbot": chatbot.url, "workbench": workbench.url}
    async with aiohttp.ClientSession() as http:
        await held_by(http, "split", "alice", **sides)
        await chat(http, "split", "anyone?", base=chatbot.url)
        async with (
            open_stream(http, chatbot.url + session_events("split")) as (customer, _),
            open_stream(http, workbench.url + session_events("split", "workbench")) as (agent_view, _),
        ):
            customer_said = ids_of(await transcript(http, "split", base=chatbot.url), "customer")
            await read_up_to(http, "split", customer_said[-1], "alice", base=workbench.url)
            assert (await customer.next_of("read", timeout=5.0)).payload["reader"] == "agent"
            said = (await agent_say(http, "split", "alice", "here", base=workbench.url))["message"]
            await read_up_to(http, "split", said["id"], base=chatbot.url)
            reads = [e.payload for e in await agent_view.drain(QUIET) if e.type == "read"]
            assert [(r["reader"], r["up_to"]) for r in reads][-1] == ("customer", said["id"])
        listed = await call_json(http, "GET", f"{workbench.url}{WORKBENCH}/sessions?status=agent_active")
        assert [s["unread"] for s in listed["sessions"]] == [0]
