"""Agents' presence and capacity (docs/routing.md): an agent sets its status and capacity, every
agent stream hears ``agent_status``, a takeover past the capacity is refused and changes
nothing, giving a conversation back frees its place, and an agent with no stream open for
--agent-grace becomes offline by itself. Memory, and a real redis-server; the capacity race
against Redis with many takeovers at once."""

import asyncio
from typing import Any

import pytest

from app.keys import AGENTS
from app.process.settings import Settings
from tests.support.api import WORKBENCH, act, agent_events, call_json, create, escalate
from tests.support.app_server import AppClient, MakeClient
from tests.support.sse import open_stream
from tests.support.wait import until

GRACE = 0.4  # --agent-grace in these tests


async def set_status(client: AppClient, agent_id: str, **body: Any) -> dict[str, Any]:
    return await call_json(client, "POST", f"{WORKBENCH}/agents/{agent_id}/status", body)


async def agents(client: AppClient) -> dict[str, dict[str, Any]]:
    answer = await call_json(client, "GET", f"{WORKBENCH}/agents")
    return {agent["agent_id"]: agent for agent in answer["agents"]}


async def waiting(client: AppClient, *names: str) -> None:
    for name in names:
        await create(client, name)
        await escalate(client, name)


async def test_status_and_capacity_are_set_listed_and_heard(client: AppClient) -> None:
    async with open_stream(client, agent_events("watcher")) as (watcher, _):
        alice = await set_status(client, "alice", status="online", capacity=4)
        assert alice == {**alice, "agent_id": "alice", "status": "online", "capacity": 4, "active": 0}
        heard = await watcher.next_of("agent_status")
        assert heard.payload == {"agent_id": "alice", "status": "online", "capacity": 4}
        assert heard.data["source"] == "agent_workbench" and heard.id is not None
        # Unchanged: 200, no event. Capacity absent: kept.
        await set_status(client, "alice", status="online")
        away = await set_status(client, "alice", status="away")
        assert away["capacity"] == 4
        assert (await watcher.next_of("agent_status")).payload["status"] == "away"
    listed = await agents(client)
    assert listed["alice"]["status"] == "away" and listed["alice"]["capacity"] == 4


async def test_bad_status_bodies_are_refused(client: AppClient) -> None:
    url = f"{WORKBENCH}/agents/alice/status"
    for body in (
        {"status": "busy"},
        {"status": "online", "capacity": -1},
        {"status": "online", "capacity": 101},
        {},
    ):
        async with client.post(url, json=body) as answer:
            assert answer.status == 400, body
            assert (await answer.json())["error"]["code"] == "validation_error"
    assert "alice" not in await agents(client)


async def test_a_takeover_past_the_capacity_is_refused(client: AppClient) -> None:
    await set_status(client, "alice", status="online", capacity=2)
    await waiting(client, "c1", "c2", "c3")
    await act(client, "c1", "takeover", "alice")
    await act(client, "c2", "takeover", "alice")
    await act(client, "c2", "takeover", "alice")  # held already: not counted twice
    async with client.post(f"{WORKBENCH}/sessions/c3/takeover", json={"agent_id": "alice"}) as answer:
        assert answer.status == 409
        error = (await answer.json())["error"]
    assert error["code"] == "at_capacity" and "capacity" in error["message"]
    session = await call_json(client, "GET", f"{WORKBENCH}/sessions/c3")
    assert session["status"] == "waiting_agent"  # nothing changed
    assert (await agents(client))["alice"]["active"] == 2
    await act(client, "c1", "release", "alice")
    await act(client, "c3", "takeover", "alice")  # room again
    await act(client, "c2", "close", "alice")
    assert (await agents(client))["alice"]["active"] == 1


async def test_a_refused_takeover_gives_its_place_back(client: AppClient) -> None:
    await set_status(client, "alice", status="online", capacity=1)
    await waiting(client, "r1", "r2")
    await act(client, "r1", "takeover", "bob")
    async with client.post(f"{WORKBENCH}/sessions/r1/takeover", json={"agent_id": "alice"}) as answer:
        assert answer.status == 409  # held by bob
    await act(client, "r2", "takeover", "alice")  # alice's one place is still free


async def test_an_agent_without_a_stream_goes_offline(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings, agent_grace=GRACE)
    async with open_stream(client, agent_events("watcher")) as (watcher, _):
        await set_status(client, "alice", status="online")
        await set_status(client, "bob", status="online")
        async with open_stream(client, agent_events("bob")):
            offline = await watcher.next_of("agent_status", timeout=10 * GRACE)
            while offline.payload["status"] != "offline":
                offline = await watcher.next_of("agent_status", timeout=10 * GRACE)
            assert offline.payload["agent_id"] == "alice" and offline.data["source"] == "system"
            await asyncio.sleep(3 * GRACE)
            assert (await agents(client))["bob"]["status"] == "online"  # its stream is open
        listed = await until(
            lambda: agents(client), lambda a: a["bob"]["status"] == "offline", timeout=10 * GRACE
        )
    assert listed["alice"]["status"] == "offline"


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_no_agent_goes_over_capacity_under_concurrent_takeovers(
    make_client: MakeClient, settings: Settings
) -> None:
    """Twenty conversations taken over by one agent of capacity 3 all at once: three succeed."""
    client = await make_client(settings, start_rate=1000)
    await set_status(client, "alice", status="online", capacity=3)
    names = [f"rush-{n}" for n in range(20)]
    await waiting(client, *names)

    async def takeover(name: str) -> int:
        async with client.post(f"{WORKBENCH}/sessions/{name}/takeover", json={"agent_id": "alice"}) as answer:
            return answer.status

    statuses = await asyncio.gather(*(takeover(name) for name in names))
    assert sorted(statuses) == [200] * 3 + [409] * 17
    assert (await agents(client))["alice"]["active"] == 3


async def test_a_count_without_a_conversation_is_dropped(make_client: MakeClient, settings: Settings) -> None:
    """A takeover counted and never committed (its process died between the two) stops
    counting after two presence rounds, so that an agent's capacity is not lost."""
    client = await make_client(settings, agent_grace=GRACE)
    await set_status(client, "alice", status="online", capacity=1)
    async with open_stream(client, agent_events("alice")):
        await client.app[AGENTS].reserve("alice", "ghost")  # what a dead takeover leaves
        assert (await agents(client))["alice"]["active"] == 1
        await until(lambda: agents(client), lambda a: a["alice"]["active"] == 0, timeout=10 * GRACE)


async def test_on_a_redis_cluster(make_client: MakeClient, cluster_url: str) -> None:
    """A status change and its event are one script on the broadcast's slot; the capacity
    count lives there too."""
    client = await make_client(Settings(redis_url=cluster_url, insecure=True, start_rate=1000))
    async with open_stream(client, agent_events("watcher")) as (watcher, _):
        await set_status(client, "carol", status="online", capacity=1)
        assert (await watcher.next_of("agent_status")).payload == {
            "agent_id": "carol",
            "status": "online",
            "capacity": 1,
        }
    await waiting(client, "cl-1", "cl-2")
    await act(client, "cl-1", "takeover", "carol")
    async with client.post(f"{WORKBENCH}/sessions/cl-2/takeover", json={"agent_id": "carol"}) as answer:
        assert answer.status == 409 and (await answer.json())["error"]["code"] == "at_capacity"
    assert (await agents(client))["carol"]["active"] == 1
