"""The supervisor role (docs/security.md, "Who may do what"): supervisor tokens, the whisper only
the holding agent hears, barging in, re-assigning; every supervisor action refused to agents and
customers. The last test runs a split deployment (chatbot and workbench processes on one Redis)."""

import asyncio
from typing import Any

import aiohttp

from app.domain.auth import TokenAuthority
from app.process.settings import Settings
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    Http,
    act,
    agent_events,
    agent_say,
    bearer,
    call_json,
    create,
    escalate,
    get_session,
    send,
    session_events,
    transcript,
)
from tests.support.app_server import MakeClient
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import SSEStream, open_stream

SECRET = "switchboard-test-secret-0123456789-abcdefghij"
SUPERVISOR_STREAM = f"{WORKBENCH}/events"
QUIET = 0.3
ACTIONS = ("whisper", "barge", "reassign")


async def held(http: Http, name: str, agent_id: str, *, chatbot: str = "", workbench: str = "") -> None:
    await create(http, name, base=chatbot)
    await escalate(http, name, base=chatbot)
    await act(http, name, "takeover", agent_id, base=workbench)


async def supervise(
    http: Http, name: str, action: str, body: dict[str, Any], *, base: str = "", status: int = 200
) -> dict[str, Any]:
    url = f"{base}{WORKBENCH}/sessions/{name}/{action}"
    return await call_json(http, "POST", url, {"supervisor_id": "sue", **body}, status=status)


async def online(http: Http, *agents: str, base: str = "") -> None:
    for agent in agents:
        await call_json(http, "POST", f"{base}{WORKBENCH}/agents/{agent}/status", {"status": "online"})


async def active(http: Http, base: str = "") -> dict[str, int]:
    agents = (await call_json(http, "GET", f"{base}{WORKBENCH}/agents"))["agents"]
    return {a["agent_id"]: a["active"] for a in agents}


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


async def quiet(stream: SSEStream) -> list[Any]:
    return await stream.drain(QUIET)


async def test_supervisor_actions_are_refused_to_agents_and_customers(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(settings, insecure=False, secret=SECRET)
    authority = TokenAuthority(SECRET)
    sue = bearer(authority.mint("supervisor", "sue", 600))
    alice = bearer(authority.mint("agent", "alice", 600))
    created = await create(client, "guarded")
    customer = bearer(created["token"])
    await call_json(
        client, "POST", f"{CHATBOT}/manual/escalate", {"session_name": "guarded"}, headers=customer
    )
    await call_json(client, "POST", f"{WORKBENCH}/sessions/guarded/takeover", {}, headers=alice)
    bodies: dict[str, dict[str, Any]] = {
        "whisper": {"content": "psst"},
        "barge": {},
        "reassign": {"to_queue": True},
    }
    for action in ACTIONS:
        url = f"{WORKBENCH}/sessions/guarded/{action}"
        for headers, status in ((alice, 403), (customer, 403), ({}, 401)):
            reply = await send(client, "POST", url, bodies[action], headers=headers)
            assert reply.status == status, (action, reply.body)
        mismatch = await send(client, "POST", url, {**bodies[action], "supervisor_id": "bob"}, headers=sue)
        assert mismatch.status == 403 and "supervisor_id" in mismatch.body["error"]["message"]
    for headers, status in ((alice, 403), (customer, 403), ({}, 401)):
        reply = await send(client, "GET", SUPERVISOR_STREAM, headers=headers)
        assert reply.status == status, reply.body
    # Nothing changed; the supervisor's token works the workbench like an agent's, and more.
    session = await call_json(client, "GET", f"{WORKBENCH}/sessions/guarded", headers=sue)
    assert (session["agent_id"], session.get("whispers")) == ("alice", None)
    async with open_stream(client, SUPERVISOR_STREAM, headers=sue) as (board, _):
        whispered = await supervise_as(client, "guarded", "whisper", {"content": "psst"}, sue)
        assert whispered["whispers"] == 1
        assert (await board.next_of("whisper", timeout=5.0)).payload["supervisor_id"] == "sue"


async def supervise_as(
    http: Http, name: str, action: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    return await call_json(http, "POST", f"{WORKBENCH}/sessions/{name}/{action}", body, headers=headers)


async def test_a_whisper_reaches_the_holder_only(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    await held(client, "w1", "alice")
    async with (
        open_stream(client, agent_events("alice")) as (alice, _),
        open_stream(client, agent_events("bob")) as (bob, _),
        open_stream(client, session_events("w1")) as (customer, _),
        open_stream(client, session_events("w1", "workbench")) as (watching, _),
        open_stream(client, SUPERVISOR_STREAM) as (board, _),
    ):
        session = await supervise(client, "w1", "whisper", {"content": "offer the REFUND-77"})
        assert session["whispers"] == 1 and session["agent_id"] == "alice"
        expected = {
            "session_name": "w1",
            "supervisor_id": "sue",
            "agent_id": "alice",
            "content": "offer the REFUND-77",
        }
        for stream in (alice, board):
            event = await stream.next_of("whisper", timeout=5.0)
            assert event.payload == expected and event.id is not None
        others = await asyncio.gather(*(quiet(stream) for stream in (bob, customer, watching)))
        assert not [e for heard in others for e in heard if "REFUND-77" in str(e.data)]
    for side in ("chatbot", "workbench"):
        assert "REFUND-77" not in str(await transcript(client, "w1", side))
    # The holder's stream resumed from the start has it; a customer's never does.
    since_start = {"Last-Event-ID": "0-0"}
    async with open_stream(client, agent_events("alice"), headers=since_start) as (resumed, _):
        assert "whisper" in types(await quiet(resumed))
    await create(client, "w2")
    await escalate(client, "w2")
    refused = await send(
        client, "POST", f"{WORKBENCH}/sessions/w2/whisper", {"supervisor_id": "sue", "content": "x"}
    )
    assert refused.status == 409 and refused.body["error"]["code"] == "conflict"
    assert "whispers" not in await get_session(client, "w2")


async def test_barge_in_takes_over_and_tells_everyone(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    await online(client, "alice", "sue")
    await held(client, "b1", "alice")
    assert (await active(client))["alice"] == 1
    async with (
        open_stream(client, agent_events("alice")) as (alice, _),
        open_stream(client, session_events("b1")) as (customer, _),
        open_stream(client, SUPERVISOR_STREAM) as (board, _),
    ):
        session = await supervise(client, "b1", "barge", {})
        assert (session["status"], session["agent_id"], session["escalation_reason"]) == (
            "agent_active",
            "sue",
            "barge",
        )
        audit = {"session_name": "b1", "supervisor_id": "sue", "from_agent_id": "alice"}
        assert (await alice.next_of("barge", timeout=5.0)).payload == audit
        assert (await board.next_of("barge", timeout=5.0)).payload == audit
        heard = await quiet(customer)
        assert [
            (e.type, e.payload.get("agent_id")) for e in heard if e.type in ("agent_left", "agent_joined")
        ] == [
            ("agent_left", "alice"),
            ("agent_joined", "sue"),
        ]
        assert [e.payload["message"]["role"] for e in heard if e.type == "new_message"] == ["bot"]
        assert "barge" not in types(heard)
    assert await active(client) == {"alice": 0, "sue": 1}
    # The agent it was taken from can no longer answer; the supervisor can.
    refused = await send(
        client, "POST", f"{WORKBENCH}/sessions/b1/messages", {"agent_id": "alice", "content": "hi"}
    )
    assert refused.status == 409
    await agent_say(client, "b1", "sue", "Hello, I'm the team lead.")
    await supervise(client, "b1", "barge", {}, status=409)  # it holds it already


async def test_reassign_from_the_queue_an_agent_or_back(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    await online(client, "alice", "bob")
    await create(client, "q1")
    await escalate(client, "q1")
    session = await supervise(client, "q1", "reassign", {"to_agent_id": "bob", "note": "billing"})
    assert (session["agent_id"], session["escalation_reason"], session["handoff_summary"]) == (
        "bob",
        "reassign",
        "billing",
    )
    session = await supervise(client, "q1", "reassign", {"to_agent_id": "alice"})
    assert session["agent_id"] == "alice"
    assert await active(client) == {"alice": 1, "bob": 0}
    await supervise(client, "q1", "reassign", {"to_agent_id": "carol"}, status=409)  # offline
    session = await supervise(client, "q1", "reassign", {"to_queue": True})
    assert (session["status"], session["agent_id"]) == ("waiting_agent", None)
    assert (await active(client))["alice"] == 0
    await supervise(client, "q1", "reassign", {"to_queue": True}, status=409)  # queued already
    await supervise(client, "q1", "reassign", {"to_queue": True, "to_agent_id": "bob"}, status=400)
    await supervise(client, "nobody", "reassign", {"to_queue": True}, status=404)
    metrics = (await send(client, "GET", "/metrics")).body
    assert 'switchboard_supervisor_actions_total{action="reassign"} 3.0' in metrics, metrics


async def test_split_deployment(server_process: StartServer, redis_url: str) -> None:
    """Through a workbench process, what the chatbot process's customer hears of a barge (and
    never of a whisper)."""
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        await held(http, "split", "alice", chatbot=chatbot.url, workbench=workbench.url)
        async with (
            open_stream(http, chatbot.url + session_events("split")) as (customer, _),
            open_stream(http, workbench.url + agent_events("alice")) as (alice, _),
        ):
            await supervise(http, "split", "whisper", {"content": "SECRET-WHISPER"}, base=workbench.url)
            assert (await alice.next_of("whisper", timeout=5.0)).payload["content"] == "SECRET-WHISPER"
            await supervise(http, "split", "barge", {}, base=workbench.url)
            assert (await alice.next_of("barge", timeout=5.0)).payload["supervisor_id"] == "sue"
            heard = await quiet(customer)
        assert ("agent_joined", "sue") in [(e.type, e.payload.get("agent_id")) for e in heard]
        assert "SECRET-WHISPER" not in str([e.data for e in heard])
        assert "SECRET-WHISPER" not in str(await transcript(http, "split", base=chatbot.url))


async def test_on_a_redis_cluster(make_client: MakeClient, cluster_url: str) -> None:
    """A whisper and a barge change a session on its shard and reach the holder's channel and
    the supervisors' (other slots) with the change."""
    client = await make_client(Settings(redis_url=cluster_url, insecure=True))
    await online(client, "alice", "sue")
    await held(client, "kc", "alice")
    async with (
        open_stream(client, agent_events("alice")) as (alice, _),
        open_stream(client, SUPERVISOR_STREAM) as (board, _),
    ):
        await supervise(client, "kc", "whisper", {"content": "cluster whisper"})
        await supervise(client, "kc", "barge", {})
        for stream in (alice, board):
            assert (await stream.next_of("whisper", timeout=5.0)).payload["content"] == "cluster whisper"
            assert (await stream.next_of("barge", timeout=5.0)).payload["from_agent_id"] == "alice"
    assert (await get_session(client, "kc", "workbench"))["agent_id"] == "sue"
