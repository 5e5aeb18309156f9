"""The whole hand-off, run against one or two processes (the test of the two-process layout,
and again on a Redis Cluster and behind nginx): each step checked on the customer's, the
watching agent's and the holder's streams."""

from typing import Any

import aiohttp

from tests.support.api import call
from tests.support.checks import check_envelope, check_ids
from tests.support.sse import SSEEvent, SSEStream, open_stream


def check_message(
    event: SSEEvent,
    name: str,
    role: str,
    source: str,
    content: str | None = None,
    agent_id: str | None = None,
) -> dict[str, Any]:
    assert event.type == "new_message", event
    check_envelope(event, source)
    assert event.payload["session_name"] == name, event
    message = event.payload["message"]
    assert message["role"] == role, event
    assert message["id"], event
    assert isinstance(message["created_at"], int), event
    assert message["agent_id"] == agent_id, event
    if content is not None:
        assert message["content"] == content, event
    result: dict[str, Any] = message
    return result


class Recorder:
    """An SSE stream whose events are all kept, for the id checks at the end."""

    def __init__(self, stream: SSEStream, connected: SSEEvent) -> None:
        self.stream = stream
        self.events = [connected]

    async def take(self, count: int, timeout: float = 5.0) -> list[SSEEvent]:
        events = await self.stream.take(count, timeout)
        self.events.extend(events)
        return events

    async def assert_quiet(self, seconds: float = 0.4) -> None:
        await self.stream.assert_quiet(seconds)


async def run_handoff(
    http: aiohttp.ClientSession, chatbot: str, workbench: str, name: str, agent: str
) -> None:
    """The whole handoff: customer on ``chatbot``'s process, agent on ``workbench``'s (which
    may be the same process); every step checked on the customer's and the agent's streams."""
    created = await call(http, "POST", f"{chatbot}/chatbot/api/sessions", {"session_name": name}, status=201)
    assert created["session_name"] == name and created["status"] == "bot_active", created
    assert created["agent_id"] is None, created
    session_channel, agent_channel = f"sse:session:{name}", f"sse:agent:{agent}"

    async with (
        open_stream(http, f"{chatbot}/chatbot/api/sessions/{name}/events") as (c_stream, c_conn),
        open_stream(http, f"{workbench}/workbench/api/agents/{agent}/events") as (a_stream, a_conn),
        open_stream(http, f"{workbench}/workbench/api/sessions/{name}/events") as (w_stream, w_conn),
    ):
        customer, agent_view, watch = (
            Recorder(c_stream, c_conn),
            Recorder(a_stream, a_conn),
            Recorder(w_stream, w_conn),
        )
        for connected in (c_conn, a_conn, w_conn):
            check_envelope(connected, "system")
            assert connected.id is not None, connected
        assert c_conn.payload["channels"] == [session_channel], c_conn
        assert c_conn.payload["session_name"] == name, c_conn
        assert w_conn.payload["channels"] == [session_channel], w_conn
        assert a_conn.payload["agent_id"] == agent, a_conn
        assert sorted(a_conn.payload["channels"]) == sorted([agent_channel, "sse:broadcast"])

        # 1. The bot answers a greeting; both session streams (both processes) see it.
        answer = await call(
            http, "POST", f"{chatbot}/chatbot/api/chat", {"session_name": name, "content": "hello"}
        )
        assert answer["reply"] is not None and answer["reply"]["role"] == "bot", answer
        for view in (customer, watch):
            said, bot = await view.take(2)
            check_message(said, name, "customer", "ai_chatbot", "hello")
            check_message(bot, name, "bot", "ai_chatbot", answer["reply"]["content"])

        # 2. The customer asks for a human: the agent (other process) gets transfer_request.
        answer = await call(
            http,
            "POST",
            f"{chatbot}/chatbot/api/chat",
            {"session_name": name, "content": "I want to talk to a human please"},
        )
        assert answer["session"]["status"] == "waiting_agent", answer
        said, bot, change = await customer.take(3)
        check_message(said, name, "customer", "ai_chatbot", "I want to talk to a human please")
        check_message(bot, name, "bot", "ai_chatbot")
        assert change.type == "status_change", change
        check_envelope(change, "ai_chatbot")
        assert change.payload["session_name"] == name, change
        assert change.payload["status"] == "waiting_agent", change
        assert change.payload["previous_status"] == "bot_active", change
        assert change.payload["agent_id"] is None, change
        [transfer] = await agent_view.take(1)
        assert transfer.type == "transfer_request", transfer
        check_envelope(transfer, "ai_chatbot")
        assert transfer.payload["session_name"] == name, transfer
        assert transfer.payload["status"] == "waiting_agent", transfer
        assert isinstance(transfer.payload["reason"], str) and transfer.payload["reason"], transfer
        await watch.take(3)
        queue = await call(http, "GET", f"{workbench}/workbench/api/sessions?status=waiting_agent")
        assert name in [s["session_name"] for s in queue["sessions"]], queue

        # 3. The agent takes over through the workbench process.
        taken = await call(
            http, "POST", f"{workbench}/workbench/api/sessions/{name}/takeover", {"agent_id": agent}
        )
        assert taken["status"] == "agent_active" and taken["agent_id"] == agent, taken
        for view in (customer, watch):
            joined, change = await view.take(2)
            assert joined.type == "agent_joined", joined
            check_envelope(joined, "agent_workbench")
            assert joined.payload["session_name"] == name, joined
            assert joined.payload["agent_id"] == agent, joined
            assert change.type == "status_change", change
            check_envelope(change, "agent_workbench")
            assert change.payload["status"] == "agent_active", change
            assert change.payload["previous_status"] == "waiting_agent", change
            assert change.payload["agent_id"] == agent, change
        [queue_change] = await agent_view.take(1)
        assert queue_change.type == "status_change", queue_change
        check_envelope(queue_change, "agent_workbench")
        assert queue_change.payload["status"] == "agent_active", queue_change
        assert queue_change.payload["agent_id"] == agent, queue_change

        # 4. A customer message goes to the agent (other process); the bot stays silent.
        answer = await call(
            http,
            "POST",
            f"{chatbot}/chatbot/api/chat",
            {"session_name": name, "content": "where is my order?"},
        )
        assert answer["reply"] is None, answer
        [said] = await customer.take(1)
        check_message(said, name, "customer", "ai_chatbot", "where is my order?")
        [forwarded] = await agent_view.take(1)
        check_message(forwarded, name, "customer", "ai_chatbot", "where is my order?")
        assert forwarded.payload["message"]["id"] == said.payload["message"]["id"]
        await customer.assert_quiet()
        await watch.take(1)

        # 5. The agent answers through the workbench; the customer's stream (other process) sees it.
        sent = await call(
            http,
            "POST",
            f"{workbench}/workbench/api/sessions/{name}/messages",
            {"agent_id": agent, "content": "It ships tomorrow."},
        )
        assert sent["message"]["role"] == "agent" and sent["message"]["agent_id"] == agent, sent
        for view in (customer, watch):
            [reply] = await view.take(1)
            message = check_message(
                reply, name, "agent", "agent_workbench", "It ships tomorrow.", agent_id=agent
            )
            assert message["id"] == sent["message"]["id"], (message, sent)

        # 6. Release: agent_left + status_change back to the bot, agent_id null.
        released = await call(
            http, "POST", f"{workbench}/workbench/api/sessions/{name}/release", {"agent_id": agent}
        )
        assert released["status"] == "bot_active" and released["agent_id"] is None, released
        for view in (customer, watch):
            left, change = await view.take(2)
            assert left.type == "agent_left", left
            check_envelope(left, "agent_workbench")
            assert left.payload["agent_id"] == agent and left.payload["session_name"] == name
            assert change.type == "status_change", change
            check_envelope(change, "agent_workbench")
            assert change.payload["status"] == "bot_active", change
            assert change.payload["previous_status"] == "agent_active", change
            assert change.payload["agent_id"] is None, change
        [queue_change] = await agent_view.take(1)
        assert queue_change.type == "status_change", queue_change
        assert queue_change.payload["status"] == "bot_active", queue_change

        # 7. The bot answers again; the agent no longer hears the customer.
        answer = await call(
            http,
            "POST",
            f"{chatbot}/chatbot/api/chat",
            {"session_name": name, "content": "thanks, one more thing?"},
        )
        assert answer["reply"] is not None, answer
        said, bot = await customer.take(2)
        check_message(said, name, "customer", "ai_chatbot", "thanks, one more thing?")
        check_message(bot, name, "bot", "ai_chatbot", answer["reply"]["content"])
        await watch.take(2)
        await agent_view.assert_quiet()

        check_ids(customer.events)
        check_ids(watch.events)
        # Two channels: strictness across them is test_ids_increase_across_channels' business.
        check_ids(agent_view.events, strictly=False)

    transcript = await call(http, "GET", f"{workbench}/workbench/api/sessions/{name}/messages")
    assert [m["role"] for m in transcript["messages"]] == [
        "customer",
        "bot",
        "customer",
        "bot",
        "customer",
        "agent",
        "customer",
        "bot",
    ], transcript
