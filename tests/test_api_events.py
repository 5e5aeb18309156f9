"""Every endpoint of docs/api.md on both backends: its response, and the events it publishes (type,
payload, order, source, id) as a client reads them on the session stream and on the agent
stream (the agent's own channel plus the broadcast)."""

import asyncio
import re
import time
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
from redis.asyncio import Redis

from app.keys import STREAMS
from app.process.settings import Settings
from tests.support import api
from tests.support.api import (
    CHATBOT,
    STATUSES,
    WORKBENCH,
    act,
    agent_events,
    agent_say,
    call,
    chat,
    create,
    escalate,
    get_session,
    session_events,
    streams_open,
    transcript,
)
from tests.support.app_server import AppClient, MakeClient
from tests.support.checks import ENVELOPE_KEYS
from tests.support.sse import SSEEvent, SSEStream, open_stream
from tests.support.sse import open_streams as streams
from tests.support.wait import wait_for

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
FROM_CHATBOT = "ai_chatbot"
FROM_WORKBENCH = "agent_workbench"
SESSION_KEYS = {"session_name", "status", "agent_id", "created_at", "updated_at", "escalation_reason"}
MESSAGE_KEYS = {"id", "role", "content", "agent_id", "created_at"}
# How long a stream must stay silent to prove an action published nothing on it.
QUIET = 0.25
DISCONNECT_DEADLINE = 3.0

# A session brought to a status through the API (held by agent-0 when agent_active).
in_status = partial(api.in_status, agent_id="agent-0")


# --- requests ----------------------------------------------------------------------------------


async def queue(client: AppClient, status: str | None = None) -> list[str]:
    """Names of the sessions listed for ``status`` (the default listing when None), in order."""
    query = "" if status is None else f"?status={status}"
    body = await call(client, "GET", f"{WORKBENCH}/sessions{query}")
    for session in body["sessions"]:
        check_session(session)
    return [session["session_name"] for session in body["sessions"]]


# --- streams -----------------------------------------------------------------------------------


async def all_quiet(*opened: SSEStream) -> None:
    await asyncio.gather(*(stream.assert_quiet(QUIET) for stream in opened))


# --- shapes ------------------------------------------------------------------------------------


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def has(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every key of ``expected`` is in ``actual`` with that value (objects may gain keys)."""
    missing = {k: v for k, v in expected.items() if k not in actual or actual[k] != v}
    assert not missing, f"{actual} does not hold {missing}"


def check_event(event: SSEEvent, type_: str, source: str, payload: dict[str, Any] | None = None) -> None:
    """The envelope is exactly the four keys, with an integer timestamp and the right source;
    a data event carries an ``id:``; ``payload`` holds at least ``payload``."""
    assert event.type == type_, event
    assert set(event.data) == ENVELOPE_KEYS, event.data
    assert is_int(event.data["timestamp"]), event.data
    assert abs(event.data["timestamp"] - time.time()) < 60, event.data
    assert event.data["source"] == source, event.data
    assert isinstance(event.payload, dict), event.data
    if type_ != "heartbeat":
        assert event.id, f"{type_} event without an id"
    if payload is not None:
        has(event.payload, payload)


def check_session(
    session: dict[str, Any],
    name: str | None = None,
    status: str | None = None,
    agent_id: str | None = None,
) -> None:
    assert set(session) >= SESSION_KEYS, session
    assert NAME.match(session["session_name"]), session
    assert session["status"] in STATUSES, session
    assert is_int(session["created_at"]) and is_int(session["updated_at"]), session
    assert session["created_at"] <= session["updated_at"], session
    if name is not None:
        assert session["session_name"] == name, session
    if status is not None:
        has(session, {"status": status, "agent_id": agent_id})


def check_message(
    message: dict[str, Any], role: str, content: str | None = None, agent_id: str | None = None
) -> None:
    assert set(message) >= MESSAGE_KEYS, message
    assert isinstance(message["id"], str) and message["id"], message
    assert is_int(message["created_at"]), message
    has(message, {"role": role, "agent_id": agent_id})
    if content is not None:
        assert message["content"] == content, message
    else:
        assert isinstance(message["content"], str) and message["content"], message


def status_change(name: str, status: str, previous: str, agent_id: str | None) -> dict[str, Any]:
    return {"session_name": name, "status": status, "previous_status": previous, "agent_id": agent_id}


def new_message(name: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"session_name": name, "message": message}


# --- sessions ----------------------------------------------------------------------------------


async def test_create_session_with_name(client: AppClient) -> None:
    """POST /chatbot/api/sessions with a name answers 201 with a fresh bot_active session that
    both sub-apps then serve, and publishes nothing."""
    async with streams(client, agent_events("watcher")) as (agent,):
        session = await create(client, "alpha_1")
        check_session(session, "alpha_1", "bot_active", None)
        assert session["escalation_reason"] is None
        assert await get_session(client, "alpha_1") == session
        assert await get_session(client, "alpha_1", "workbench") == session
        assert await transcript(client, "alpha_1") == []
        await agent.assert_quiet(QUIET)


@pytest.mark.parametrize("body", [None, {}, {"session_name": None}], ids=["no-body", "empty", "null"])
async def test_create_session_generates_a_name(client: AppClient, body: Any) -> None:
    """Without a name the server generates a valid, unique one."""
    first = await call(client, "POST", f"{CHATBOT}/sessions", body, status=201)
    second = await call(client, "POST", f"{CHATBOT}/sessions", body, status=201)
    for session in (first, second):
        check_session(session, status="bot_active", agent_id=None)
        assert await get_session(client, session["session_name"]) == session
    assert first["session_name"] != second["session_name"]


# --- customer messages -------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["chatbot", "workbench"])
async def test_chat_in_bot_active(client: AppClient, sub: str) -> None:
    """A customer message in bot_active publishes the customer's new_message then the bot's on the
    session channel (read from either sub-app), nothing to agents; the reply is in the answer."""
    await create(client, "c1")
    async with streams(client, session_events("c1", sub), agent_events("watcher")) as opened:
        session_stream, agent = opened
        body = await chat(client, "c1", "hello there")
        assert set(body) >= {"session", "message", "reply"}
        check_session(body["session"], "c1", "bot_active", None)
        check_message(body["message"], "customer", "hello there")
        check_message(body["reply"], "bot")
        customer, bot = await session_stream.take(2)
        check_event(customer, "new_message", FROM_CHATBOT, new_message("c1", body["message"]))
        check_event(bot, "new_message", FROM_CHATBOT, new_message("c1", body["reply"]))
        assert customer.id != bot.id
        await all_quiet(session_stream, agent)


async def test_chat_creates_the_session(client: AppClient) -> None:
    """Chatting on an unknown name creates the session (bot_active) and the bot answers."""
    await call(client, "GET", f"{CHATBOT}/sessions/fresh", status=404)
    async with streams(client, agent_events("watcher")) as (agent,):
        body = await chat(client, "fresh", "hello")
        check_session(body["session"], "fresh", "bot_active", None)
        check_message(body["reply"], "bot")
        check_session(await get_session(client, "fresh"), "fresh", "bot_active", None)
        assert [m["role"] for m in await transcript(client, "fresh")] == ["customer", "bot"]
        await agent.assert_quiet(QUIET)


@pytest.mark.parametrize("content", ["can I talk to a human please", "我要人工"])
async def test_chat_asking_for_a_human(client: AppClient, content: str) -> None:
    """Asking for a human: the bot answers, then status_change bot_active→waiting_agent on the
    session channel and a transfer_request on the broadcast."""
    await create(client, "h1")
    async with streams(client, session_events("h1"), agent_events("watcher")) as opened:
        session_stream, agent = opened
        body = await chat(client, "h1", content)
        check_session(body["session"], "h1", "waiting_agent", None)
        check_message(body["reply"], "bot")
        customer, bot, change = await session_stream.take(3)
        check_event(customer, "new_message", FROM_CHATBOT, new_message("h1", body["message"]))
        check_event(bot, "new_message", FROM_CHATBOT, new_message("h1", body["reply"]))
        check_event(
            change, "status_change", FROM_CHATBOT, status_change("h1", "waiting_agent", "bot_active", None)
        )
        (transfer,) = await agent.take(1)
        reason = body["session"]["escalation_reason"]
        check_event(
            transfer,
            "transfer_request",
            FROM_CHATBOT,
            {"session_name": "h1", "status": "waiting_agent", "reason": reason},
        )
        await all_quiet(session_stream, agent)
    assert await queue(client) == ["h1"]


async def test_chat_while_held_goes_to_the_holder(client: AppClient) -> None:
    """While an agent holds the session, a customer message goes to the session channel and the
    holder's channel only, and the bot stays silent (reply null)."""
    await create(client, "held")
    await act(client, "held", "takeover", "agent-1")
    urls = (session_events("held"), agent_events("agent-1"), agent_events("agent-2"))
    async with streams(client, *urls) as (session_stream, holder, other):
        body = await chat(client, "held", "are you there")
        assert body["reply"] is None
        check_session(body["session"], "held", "agent_active", "agent-1")
        check_message(body["message"], "customer", "are you there")
        expected = new_message("held", body["message"])
        (on_session,) = await session_stream.take(1)
        check_event(on_session, "new_message", FROM_CHATBOT, expected)
        (on_holder,) = await holder.take(1)
        check_event(on_holder, "new_message", FROM_CHATBOT, expected)
        await all_quiet(session_stream, holder, other)
    assert [m["role"] for m in await transcript(client, "held")] == ["customer"]


async def test_chat_while_waiting_gets_no_bot_reply(client: AppClient) -> None:
    """In waiting_agent the customer's message is published and the bot does not answer."""
    await create(client, "w1")
    await escalate(client, "w1")
    async with streams(client, session_events("w1"), agent_events("watcher")) as opened:
        session_stream, agent = opened
        body = await chat(client, "w1", "hello?")
        assert body["reply"] is None
        check_session(body["session"], "w1", "waiting_agent", None)
        (event,) = await session_stream.take(1)
        check_event(event, "new_message", FROM_CHATBOT, new_message("w1", body["message"]))
        await all_quiet(session_stream, agent)
    assert [m["role"] for m in await transcript(client, "w1")] == ["customer"]


# --- escalate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["charged twice", None], ids=["reason", "no-reason"])
async def test_escalate(client: AppClient, reason: str | None) -> None:
    """Escalate: status_change on the session, transfer_request with the reason (null when
    absent) on the broadcast; escalating again answers 200 unchanged and publishes nothing."""
    await create(client, "e1")
    async with streams(client, session_events("e1"), agent_events("watcher")) as opened:
        session_stream, agent = opened
        session = await escalate(client, "e1", reason)
        check_session(session, "e1", "waiting_agent", None)
        assert session["escalation_reason"] == reason
        (change,) = await session_stream.take(1)
        check_event(
            change, "status_change", FROM_CHATBOT, status_change("e1", "waiting_agent", "bot_active", None)
        )
        (transfer,) = await agent.take(1)
        check_event(
            transfer,
            "transfer_request",
            FROM_CHATBOT,
            {"session_name": "e1", "status": "waiting_agent", "reason": reason},
        )

        again = await escalate(client, "e1", "a second reason")
        assert again == session
        await all_quiet(session_stream, agent)
    assert await get_session(client, "e1") == session


# --- takeover, release, close, agent message ---------------------------------------------------


@pytest.mark.parametrize("start", ["waiting_agent", "bot_active"])
async def test_takeover(client: AppClient, start: str) -> None:
    """Takeover: agent_joined then status_change on the session, status_change on the broadcast;
    the same agent taking over again gets 200 unchanged and nothing is published."""
    await in_status(client, "t1", start)
    urls = (session_events("t1", "workbench"), agent_events("watcher"))
    async with streams(client, *urls) as (session_stream, agent):
        session = await act(client, "t1", "takeover", "agent-7")
        check_session(session, "t1", "agent_active", "agent-7")
        joined, change = await session_stream.take(2)
        check_event(joined, "agent_joined", FROM_WORKBENCH, {"session_name": "t1", "agent_id": "agent-7"})
        expected = status_change("t1", "agent_active", start, "agent-7")
        check_event(change, "status_change", FROM_WORKBENCH, expected)
        (broadcast,) = await agent.take(1)
        check_event(broadcast, "status_change", FROM_WORKBENCH, expected)

        assert await act(client, "t1", "takeover", "agent-7") == session
        await all_quiet(session_stream, agent)
    assert await queue(client, "agent_active") == ["t1"]
    assert await queue(client, "waiting_agent") == []


async def test_release(client: AppClient) -> None:
    """Release: agent_left then status_change (agent_id null) on the session, status_change on
    the broadcast; the session is back with the bot."""
    await in_status(client, "r1", "agent_active")
    async with streams(client, session_events("r1"), agent_events("watcher")) as opened:
        session_stream, agent = opened
        session = await act(client, "r1", "release", "agent-0")
        check_session(session, "r1", "bot_active", None)
        left, change = await session_stream.take(2)
        check_event(left, "agent_left", FROM_WORKBENCH, {"session_name": "r1", "agent_id": "agent-0"})
        expected = status_change("r1", "bot_active", "agent_active", None)
        check_event(change, "status_change", FROM_WORKBENCH, expected)
        (broadcast,) = await agent.take(1)
        check_event(broadcast, "status_change", FROM_WORKBENCH, expected)
        await all_quiet(session_stream, agent)


@pytest.mark.parametrize("start", ["bot_active", "waiting_agent", "agent_active"])
async def test_close(client: AppClient, start: str) -> None:
    """Close (by the holder when held): status_change to closed with agent_id null on the session
    and on the broadcast, from any open status."""
    await in_status(client, "x1", start)
    async with streams(client, session_events("x1"), agent_events("watcher")) as opened:
        session_stream, agent = opened
        session = await act(client, "x1", "close", "agent-0")
        check_session(session, "x1", "closed", None)
        expected = status_change("x1", "closed", start, None)
        (change,) = await session_stream.take(1)
        check_event(change, "status_change", FROM_WORKBENCH, expected)
        (broadcast,) = await agent.take(1)
        check_event(broadcast, "status_change", FROM_WORKBENCH, expected)
        await all_quiet(session_stream, agent)
    assert await queue(client, "closed") == ["x1"]


async def test_agent_message(client: AppClient) -> None:
    """An agent message answers {session, message} and publishes new_message (role agent, with
    agent_id) on the session channel only."""
    await in_status(client, "m1", "agent_active")
    async with streams(client, session_events("m1"), agent_events("agent-0")) as opened:
        session_stream, agent = opened
        body = await agent_say(client, "m1", "agent-0", "How can I help?")
        assert set(body) >= {"session", "message"}
        check_session(body["session"], "m1", "agent_active", "agent-0")
        check_message(body["message"], "agent", "How can I help?", "agent-0")
        (event,) = await session_stream.take(1)
        check_event(event, "new_message", FROM_WORKBENCH, new_message("m1", body["message"]))
        await all_quiet(session_stream, agent)


# --- reads -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["chatbot", "workbench"])
async def test_session_state_and_transcript(client: AppClient, sub: str) -> None:
    """GET state and GET messages (oldest first, roles customer/bot/agent) on both sub-apps."""
    await create(client, "rd")
    await chat(client, "rd", "hello")
    await act(client, "rd", "takeover", "agent-3")
    await chat(client, "rd", "still there?")
    await agent_say(client, "rd", "agent-3", "yes, I am")
    check_session(await get_session(client, "rd", sub), "rd", "agent_active", "agent-3")
    messages = await transcript(client, "rd", sub)
    assert [m["role"] for m in messages] == ["customer", "bot", "customer", "agent"]
    check_message(messages[0], "customer", "hello")
    check_message(messages[1], "bot")
    check_message(messages[2], "customer", "still there?")
    check_message(messages[3], "agent", "yes, I am", "agent-3")
    assert len({m["id"] for m in messages}) == 4
    times = [m["created_at"] for m in messages]
    assert times == sorted(times)


async def test_session_lists_by_status(client: AppClient) -> None:
    """GET /workbench/api/sessions?status=... lists the sessions in that status; the default
    status is waiting_agent."""
    for name, status in [
        ("w-1", "waiting_agent"),
        ("b-1", "bot_active"),
        ("t-1", "agent_active"),
        ("z-1", "closed"),
    ]:
        await in_status(client, name, status)
    assert await queue(client) == ["w-1"]
    assert await queue(client, "waiting_agent") == ["w-1"]
    assert await queue(client, "bot_active") == ["b-1"]
    assert await queue(client, "agent_active") == ["t-1"]
    assert await queue(client, "closed") == ["z-1"]


async def test_queue_is_oldest_first(client: AppClient) -> None:
    """The waiting queue is first come, first served, even for sessions that arrive within the
    same second (names chosen so alphabetical order differs from arrival order)."""
    arrivals = ["q-c", "q-a", "q-b"]
    for name in arrivals:
        await in_status(client, name, "waiting_agent")
    assert await queue(client) == arrivals


# --- stream mechanics --------------------------------------------------------------------------

CONNECTED_CASES = {
    "chatbot-session": (session_events("cn", "chatbot"), ["sse:session:cn"], {"session_name": "cn"}),
    "workbench-session": (session_events("cn", "workbench"), ["sse:session:cn"], {"session_name": "cn"}),
    "agent": (agent_events("agent-5"), ["sse:agent:agent-5", "sse:broadcast"], {"agent_id": "agent-5"}),
}


@pytest.mark.parametrize("case", CONNECTED_CASES)
async def test_connected_event(client: AppClient, case: str) -> None:
    """A stream opens with `connected` (source system, with an id) naming its channels and its
    session or agent."""
    url, channels, who = CONNECTED_CASES[case]
    await create(client, "cn")
    async with open_stream(client, url) as (_, connected):
        check_event(connected, "connected", "system", who)
        assert sorted(connected.payload["channels"]) == sorted(channels)


async def test_heartbeat_on_an_idle_stream(make_client: MakeClient, settings: Settings) -> None:
    """An idle stream receives heartbeat events (source system, empty payload, no id)."""
    client = await make_client(settings, heartbeat=0.2)
    await create(client, "hb")
    async with streams(client, session_events("hb"), agent_events("agent-1")) as opened:
        for stream in opened:
            heartbeat = await stream.next(timeout=2.0)
            check_event(heartbeat, "heartbeat", "system", {})
            assert heartbeat.payload == {}
            assert heartbeat.id is None


async def test_a_stream_opened_during_shutdown_ends_at_once(client: AppClient) -> None:
    """A stream that opens after the process began to stop (its streams ended, its connections
    not yet closed) ends at once with a reconnection hint, like the streams already open: it
    does not hold the stop up until the server's shutdown timeout."""
    await create(client, "late")
    client.app[STREAMS].close_all()  # what on_shutdown does
    async with open_stream(client, session_events("late")) as (stream, connected):
        check_event(connected, "connected", "system", {"session_name": "late"})
        assert await stream.read_to_end(timeout=2.0) == []
        assert stream.retry_ms is not None
    assert await streams_open(client) == 0


def id_order(event_id: str) -> tuple[int, ...]:
    """Sort key of an event id. Ids are opaque to clients but this server uses the Redis stream
    format ``<ms>-<seq>`` on both backends, which is how "increasing" can be checked."""
    return tuple(int(part) for part in event_id.split("-"))


def assert_increasing(events: list[SSEEvent]) -> None:
    ids = [event.id for event in events]
    assert all(ids), ids
    keys = [id_order(event_id) for event_id in ids if event_id]
    assert keys == sorted(set(keys)), f"ids not strictly increasing: {ids}"


async def test_full_handoff(client: AppClient) -> None:
    """Bot chat → ask for a human → agent sees the request, takes over → customer and agent
    talk live → agent releases → the bot answers again; every step seen on both streams,
    whose ids increase from the `connected` id on."""
    await create(client, "journey")
    async with AsyncExitStack() as stack:
        customer, hello = await stack.enter_async_context(open_stream(client, session_events("journey")))
        agent, hello_agent = await stack.enter_async_context(open_stream(client, agent_events("agent-9")))
        on_customer, on_agent = [hello], [hello_agent]

        async def customer_sees(count: int) -> list[SSEEvent]:
            on_customer.extend(await customer.take(count))
            return on_customer[-count:]

        async def agent_sees(count: int) -> list[SSEEvent]:
            on_agent.extend(await agent.take(count))
            return on_agent[-count:]

        # 1. The bot answers.
        body = await chat(client, "journey", "hello")
        events = await customer_sees(2)
        assert [(e.type, e.payload["message"]["role"]) for e in events] == [
            ("new_message", "customer"),
            ("new_message", "bot"),
        ]
        # 2. The customer asks for a human; the agent is told.
        body = await chat(client, "journey", "I want a human")
        events = await customer_sees(3)
        assert [e.type for e in events] == ["new_message", "new_message", "status_change"]
        assert events[2].payload["status"] == "waiting_agent"
        (transfer,) = await agent_sees(1)
        check_event(
            transfer, "transfer_request", FROM_CHATBOT, {"session_name": "journey", "status": "waiting_agent"}
        )
        assert await queue(client) == ["journey"]
        # 3. The agent takes over; the customer sees the agent join.
        await act(client, "journey", "takeover", "agent-9")
        joined, change = await customer_sees(2)
        check_event(
            joined, "agent_joined", FROM_WORKBENCH, {"session_name": "journey", "agent_id": "agent-9"}
        )
        check_event(
            change,
            "status_change",
            FROM_WORKBENCH,
            status_change("journey", "agent_active", "waiting_agent", "agent-9"),
        )
        (queue_change,) = await agent_sees(1)
        check_event(queue_change, "status_change", FROM_WORKBENCH, change.payload)
        # 4. The customer's message reaches the agent, not the bot.
        body = await chat(client, "journey", "my order is late")
        assert body["reply"] is None
        (seen_by_customer,) = await customer_sees(1)
        (seen_by_agent,) = await agent_sees(1)
        for event in (seen_by_customer, seen_by_agent):
            check_event(event, "new_message", FROM_CHATBOT, new_message("journey", body["message"]))
        # 5. The agent answers; the customer sees it.
        said = await agent_say(client, "journey", "agent-9", "Let me check that for you")
        (answer,) = await customer_sees(1)
        check_event(answer, "new_message", FROM_WORKBENCH, new_message("journey", said["message"]))
        # 6. The agent releases; the customer sees the agent leave.
        await act(client, "journey", "release", "agent-9")
        left, change = await customer_sees(2)
        check_event(left, "agent_left", FROM_WORKBENCH, {"session_name": "journey", "agent_id": "agent-9"})
        check_event(
            change,
            "status_change",
            FROM_WORKBENCH,
            status_change("journey", "bot_active", "agent_active", None),
        )
        (queue_change,) = await agent_sees(1)
        check_event(queue_change, "status_change", FROM_WORKBENCH, change.payload)
        # 7. The bot answers again, and the agent no longer hears the customer.
        body = await chat(client, "journey", "thanks, anything else?")
        check_message(body["reply"], "bot")
        events = await customer_sees(2)
        assert [e.payload["message"]["role"] for e in events] == ["customer", "bot"]
        await all_quiet(customer, agent)
    assert_increasing(on_customer)
    assert_increasing(on_agent)
    roles = [m["role"] for m in await transcript(client, "journey")]
    assert roles == ["customer", "bot", "customer", "bot", "customer", "agent", "customer", "bot"]


async def test_concurrent_takeovers_have_one_winner(client: AppClient) -> None:
    """Twenty agents take over one waiting session at once: one 200, nineteen 409, and exactly
    one agent_joined is published."""
    await in_status(client, "race", "waiting_agent")
    async with streams(client, session_events("race"), agent_events("watcher")) as opened:
        session_stream, agent = opened
        agents = [f"agent-{i}" for i in range(20)]
        responses = await asyncio.gather(
            *(client.post(f"{WORKBENCH}/sessions/race/takeover", json={"agent_id": a}) for a in agents)
        )
        statuses = [response.status for response in responses]
        bodies = [await response.json() for response in responses]
        assert sorted(statuses) == [200] + [409] * 19, statuses
        winner = agents[statuses.index(200)]
        for status, body in zip(statuses, bodies, strict=True):
            if status == 409:
                assert set(body["error"]) >= {"code", "message"}
        check_session(await get_session(client, "race"), "race", "agent_active", winner)
        joined, change = await session_stream.take(2)
        check_event(joined, "agent_joined", FROM_WORKBENCH, {"session_name": "race", "agent_id": winner})
        check_event(
            change,
            "status_change",
            FROM_WORKBENCH,
            status_change("race", "agent_active", "waiting_agent", winner),
        )
        (broadcast,) = await agent.take(1)
        check_event(broadcast, "status_change", FROM_WORKBENCH, change.payload)
        await all_quiet(session_stream, agent)


async def subscribers(redis: Redis | None, channels: list[str]) -> int:
    """Redis subscribers over ``channels`` (0 on the memory backend, which has no Redis)."""
    if redis is None:
        return 0
    return sum(count for _, count in await redis.pubsub_numsub(*channels))


@pytest.mark.parametrize("kind", ["session", "agent"])
async def test_disconnect_releases_the_stream(
    client: AppClient, backend: str, redis: Redis, kind: str
) -> None:
    """When a client leaves a stream, /health stops counting it and (on Redis) the server
    unsubscribes its channels."""
    watched = redis if backend == "redis" else None
    await create(client, "dc")
    if kind == "session":
        url, channels = session_events("dc"), ["sse:session:dc"]
    else:
        url, channels = agent_events("agent-4"), ["sse:agent:agent-4", "sse:broadcast"]
    async with open_stream(client, url):
        assert await streams_open(client) == 1
        assert await subscribers(watched, channels) == (len(channels) if watched else 0)

    async def left() -> tuple[int, int]:
        return await streams_open(client), await subscribers(watched, channels)

    assert await wait_for(left, (0, 0), timeout=DISCONNECT_DEADLINE) == (0, 0), (
        "streams open, Redis subscribers"
    )
