"""Routing (docs/routing.md): auto assignment offers the longest-waiting conversation to the
online agent with the most free capacity, an offer declined or let expire goes to the next
agent (not back to the same one within --offer-timeout), nobody is offered past its capacity
nor a conversation twice (one process, and two real processes on one Redis), transfers to an
agent or to the front of the queue, an agent going offline hands its conversations back to the
front of the queue, the wait timeout gives a conversation back to the bot once, and a
conversation whose customer has gone is closed. Memory, a real redis-server, and one Redis
Cluster case."""

import asyncio
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from app.backends import open_backends
from app.domain.routing.metrics import RoutingMetrics
from app.domain.routing.router import (
    AGENT_OFFLINE_NOTICE,
    IDLE_NOTICE,
    TRANSFER_NOTICE,
    WAIT_TIMEOUT_NOTICE,
    Router,
    RoutingPolicy,
)
from app.domain.store import rules
from app.keys import BACKENDS, CUSTOMERS_ACTIVE
from app.process.settings import Settings
from handlers.common import router_of
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    Http,
    act,
    agent_events,
    call_json,
    create,
    escalate,
    send,
    session_events,
    transcript,
)
from tests.support.app_server import AppClient, MakeClient
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import SSEEvent, SSEStream, open_stream, open_streams
from tests.support.wait import until

OFFER_TIMEOUT = 1.0  # --offer-timeout where offers must expire within the test
LONG_OFFER = 10.0  # where they must not
ROUTED = 8.0  # the longest wait for the router to act
ROUND = 0.2  # --route-interval of the apps here: the router looks five times a second
# Every test acts many times from one address and token-less: no limit is in the way.
ROOMY = {"start_rate": 1000, "rate_limit": 1000.0, "rate_burst": 1000}


async def routed(make_client: MakeClient, settings: Settings, **changes: Any) -> AppClient:
    """The app with routing settings: auto assignment, no wait timeout and no idle closing
    unless ``changes`` say otherwise."""
    wanted: dict[str, Any] = {
        "assignment": "auto",
        "offer_timeout": LONG_OFFER,
        "wait_timeout": 0.0,
        "customer_idle": 0.0,
        "route_interval": ROUND,
        **ROOMY,
        **changes,
    }
    return await make_client(settings, **wanted)


async def set_status(
    http: Http, agent_id: str, status: str, capacity: int | None = None, *, base: str = ""
) -> None:
    body: dict[str, Any] = {"status": status}
    if capacity is not None:
        body["capacity"] = capacity
    await call_json(http, "POST", f"{base}{WORKBENCH}/agents/{agent_id}/status", body)


async def agents(http: Http, base: str = "") -> dict[str, dict[str, Any]]:
    answer = await call_json(http, "GET", f"{base}{WORKBENCH}/agents")
    return {agent["agent_id"]: agent for agent in answer["agents"]}


async def session(http: Http, name: str, base: str = "") -> dict[str, Any]:
    return await call_json(http, "GET", f"{base}{WORKBENCH}/sessions/{name}")


async def listed(http: Http, status: str, base: str = "") -> list[dict[str, Any]]:
    answer = await call_json(http, "GET", f"{base}{WORKBENCH}/sessions?status={status}&limit=100")
    assert answer["next_cursor"] is None, answer
    sessions: list[dict[str, Any]] = answer["sessions"]
    return sessions


async def position(http: Http, name: str) -> int | None:
    answer = await call_json(http, "GET", f"{CHATBOT}/sessions/{name}/queue")
    place: int | None = answer["position"]
    return place


async def waiting(http: Http, *names: str, base: str = "", reason: str | None = None) -> None:
    for name in names:
        await create(http, name, base=base)
        await escalate(http, name, reason, base=base)


async def agent_move(http: Http, name: str, move: str, agent_id: str, base: str = "") -> dict[str, Any]:
    return await call_json(http, "POST", f"{base}{WORKBENCH}/sessions/{name}/{move}", {"agent_id": agent_id})


async def transfer(http: Http, name: str, status: int = 200, **body: Any) -> dict[str, Any]:
    return await call_json(http, "POST", f"{WORKBENCH}/sessions/{name}/transfer", body, status=status)


async def next_offer(stream: SSEStream, name: str | None = None, timeout: float = ROUTED) -> SSEEvent:
    """The next ``offer`` event on an agent's stream (of ``name``, when given)."""
    async with asyncio.timeout(timeout):
        while True:
            offer = await stream.next_of("offer", timeout=timeout)
            if name is None or offer.payload["session_name"] == name:
                return offer


async def notice(stream: SSEStream, content: str, timeout: float = ROUTED) -> SSEEvent:
    """The next notice to the customer: a bot message the system sends (``content``)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await stream.next_of("new_message", timeout=timeout)
            if event.payload["message"]["role"] == "bot" and event.payload["message"]["content"] == content:
                assert event.data["source"] == "system", event
                return event


async def assert_no_offer(stream: SSEStream, quiet: float = 0.3) -> None:
    """What the agent's stream has heard (until quiet for ``quiet`` s) holds no offer."""
    heard = await stream.drain(quiet)
    assert not [e for e in heard if e.type == "offer"], heard


def offered_to(sessions: list[dict[str, Any]]) -> Counter[str]:
    return Counter(s["offer"]["agent_id"] for s in sessions if s.get("offer"))


# --- 1. The offer goes to the agent with the most free capacity ------------------------------


async def test_auto_offers_to_the_agent_with_most_free_capacity(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await routed(make_client, settings)
    # alice holds one already (taken before anyone was online: nothing was offered).
    await waiting(client, "held")
    await act(client, "held", "takeover", "alice")
    async with open_streams(client, agent_events("alice"), agent_events("bob")) as (alice, bob):
        await set_status(client, "alice", "online", capacity=4)  # 3 free
        await set_status(client, "bob", "online", capacity=2)  # 2 free
        started = time.time()
        await create(client, "c1")
        await call_json(
            client,
            "POST",
            f"{CHATBOT}/manual/escalate",
            {"session_name": "c1", "reason": "billing", "summary": "refund"},
        )
        offer = await next_offer(alice, "c1")
        assert offer.data["source"] == "system", offer
        assert offer.payload["session_name"] == "c1"
        assert offer.payload["reason"] == "billing" and offer.payload["summary"] == "refund", offer
        assert started + LONG_OFFER - 1 <= offer.payload["expires_at"] <= time.time() + LONG_OFFER + 1, offer
        offered = await session(client, "c1")
        assert offered["status"] == "waiting_agent" and offered["offer"]["agent_id"] == "alice", offered
        assert offered["offer"]["kind"] == "queue", offered
        listed_agents = await agents(client)
        assert listed_agents["alice"]["active"] == 2 and listed_agents["bob"]["active"] == 0, listed_agents
        # bob is not offered it meanwhile; nor may bob accept it.
        reply = await send(client, "POST", f"{WORKBENCH}/sessions/c1/accept", {"agent_id": "bob"})
        assert reply.status == 409, reply.body
        accepted = await agent_move(client, "c1", "accept", "alice")
        assert accepted["status"] == "agent_active" and accepted["agent_id"] == "alice", accepted
        assert not accepted.get("offer"), accepted
        again = await agent_move(client, "c1", "accept", "alice")  # accepted already: the same
        assert again["agent_id"] == "alice" and again["status"] == "agent_active"
        listed_agents = await agents(client)
        assert listed_agents["alice"]["active"] == 2 and listed_agents["bob"]["active"] == 0, listed_agents
        await assert_no_offer(bob)
        assert (await agents(client))["bob"]["active"] == 0


# --- 2. Decline and expiry: the next agent --------------------------------------------------


async def test_a_declined_or_expired_offer_goes_to_the_next_agent(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await routed(make_client, settings, offer_timeout=OFFER_TIMEOUT)
    async with open_streams(client, agent_events("alice"), agent_events("bob")) as (alice, bob):
        await set_status(client, "alice", "online", capacity=1)
        await set_status(client, "bob", "online", capacity=1)
        await waiting(client, "d1")
        # Neither was ever assigned: the tie goes by id.
        await next_offer(alice, "d1")
        declined = await agent_move(client, "d1", "decline", "alice")
        declined_at = time.time()
        assert declined["status"] == "waiting_agent" and not declined.get("offer"), declined
        assert "alice" in declined["declined"], declined
        assert (await agents(client))["alice"]["active"] == 0
        ended = await alice.next_of("offer_ended", timeout=ROUTED)
        assert ended.payload == {"session_name": "d1", "reason": "declined"}, ended
        # The next agent: bob. Then bob lets it expire: back to alice, whose decline is older
        # than --offer-timeout by then, and never to alice within it.
        second = await next_offer(bob, "d1")
        third = await next_offer(alice, "d1")
        expired = await bob.next_of("offer_ended", timeout=ROUTED)
        assert expired.payload == {"session_name": "d1", "reason": "expired"}, expired
        offered_at = third.payload["expires_at"] - OFFER_TIMEOUT
        assert offered_at >= declined_at + OFFER_TIMEOUT - 0.05, (declined_at, third)
        assert offered_at >= second.payload["expires_at"] - 0.05, (second, third)
        state = await session(client, "d1")
        assert state["offer"]["agent_id"] == "alice" and "bob" in state["declined"], state
        # bob's count was given back with its expired offer.
        assert (await agents(client))["bob"]["active"] == 0
        accepted = await agent_move(client, "d1", "accept", "alice")
        assert accepted["status"] == "agent_active" and accepted["agent_id"] == "alice"


async def test_a_decline_without_an_offer_is_refused(make_client: MakeClient, settings: Settings) -> None:
    client = await routed(make_client, settings, assignment="manual")
    await waiting(client, "n1")
    reply = await send(client, "POST", f"{WORKBENCH}/sessions/n1/decline", {"agent_id": "alice"})
    assert reply.status == 409 and reply.body["error"]["code"] == "conflict", reply.body
    reply = await send(client, "POST", f"{WORKBENCH}/sessions/n1/accept", {"agent_id": "alice"})
    assert reply.status == 409, reply.body
    assert (await agents(client)).get("alice", {"active": 0})["active"] == 0


# --- 3. Never two offers, never over capacity ----------------------------------------------

AGENTS = ("ag1", "ag2", "ag3")
CONVERSATIONS = 7
OBSERVE_ROUNDS = 200


async def check_routing_invariants(http: Http, bases: list[str]) -> None:
    """Watch (bounded) while agents of capacity 1 get offers, let some expire and accept the
    others, until each holds one: at every observed moment no agent holds and is offered more
    than its capacity, and the registry never counts more than it."""
    held_by: dict[str, str] = {}
    saw_offers = 0
    for round_ in range(OBSERVE_ROUNDS):
        base = bases[round_ % len(bases)]
        registry = await agents(http, base)
        for agent_id in AGENTS:
            assert registry[agent_id]["active"] <= 1, registry
        # Held first, then waiting: a conversation accepted between the two reads is in
        # neither, never in both.
        held = await listed(http, "agent_active", base)
        queue = await listed(http, "waiting_agent", base)
        holders = Counter(s["agent_id"] for s in held)
        offers = offered_to(queue)
        for agent_id in AGENTS:
            assert holders[agent_id] + offers[agent_id] <= 1, (agent_id, held, queue)
        assert len(queue) + len(held) == CONVERSATIONS, (held, queue)
        saw_offers = max(saw_offers, sum(offers.values()))
        # Let the first rounds' offers expire; then accept what is offered (a 409 when it
        # expired meanwhile).
        if round_ >= 8:
            for s in queue:
                if s.get("offer") and s["offer"]["expires_at"] > time.time() + 0.2:
                    agent_id = s["offer"]["agent_id"]
                    url = f"{bases[(round_ + 1) % len(bases)]}{WORKBENCH}/sessions/{s['session_name']}/accept"
                    reply = await send(http, "POST", url, {"agent_id": agent_id})
                    assert reply.status in (200, 409), reply.body
                    if reply.status == 200:
                        held_by[agent_id] = s["session_name"]
        if len(held_by) == len(AGENTS) and not offers:
            break
        await asyncio.sleep(0.1)
    assert saw_offers == len(AGENTS), "every agent was offered a conversation at once"
    assert sorted(held_by) == sorted(AGENTS), held_by
    held = await listed(http, "agent_active", bases[0])
    assert sorted(s["agent_id"] for s in held) == sorted(AGENTS), held
    queue = await listed(http, "waiting_agent", bases[-1])
    assert len(queue) == CONVERSATIONS - len(AGENTS) and not offered_to(queue), queue
    registry = await agents(http, bases[0])
    assert all(registry[a]["active"] == 1 for a in AGENTS), registry


async def test_never_over_capacity_nor_two_offers(make_client: MakeClient, settings: Settings) -> None:
    client = await routed(make_client, settings, offer_timeout=OFFER_TIMEOUT)
    await waiting(client, *(f"q{n}" for n in range(CONVERSATIONS)))
    for agent_id in AGENTS:
        await set_status(client, agent_id, "online", capacity=1)
    await check_routing_invariants(client, [""])


async def test_two_routers_racing_keep_every_count(redis_url: str) -> None:
    """Two routers (as two processes) offering one queue in the same instant to the same
    agents: one offer per conversation, every offer in its agent's load and in no other, no
    agent past its capacity. (A router that lost the race once gave back the winner's count:
    the agent looked free and was offered twice its capacity.)"""
    policy = RoutingPolicy(auto=True, offer_timeout=30.0, wait_timeout=0.0, customer_idle=0.0)
    opened = [await open_backends(Settings(redis_url=redis_url, insecure=True)) for _ in range(2)]
    try:
        one, other = (Router(b.store, b.agents, b.customers, policy, RoutingMetrics()) for b in opened)
        store, registry = opened[0].store, opened[0].agents
        for n in range(6):
            await registry.set_status(f"agent-{n}", "online", 4)
        for n in range(40):
            await store.create(f"r-{n:02d}")
            await store.apply(f"r-{n:02d}", "escalate")
        for _ in range(5):  # bounded: the first round offers what can be offered
            now = time.time()
            await asyncio.gather(one.round(now), other.round(now))
        queue = await store.list_sessions("waiting_agent", limit=100)
        offers = {s["session_name"]: o["agent_id"] for s in queue.items if (o := s.get("offer")) is not None}
        assert len(offers) == 24, offers  # 6 agents x 4
        loads = {f"agent-{n}": set(await registry.held(f"agent-{n}")) for n in range(6)}
        for agent_id, load in loads.items():
            assert load == {name for name, a in offers.items() if a == agent_id}, (agent_id, load)
            assert len(load) <= 4
        assert sum(len(load) for load in loads.values()) == len(offers)
    finally:
        for backends in opened:
            await backends.close()


async def test_two_processes_route_one_queue(server_process: StartServer, redis_url: str) -> None:
    flags = (
        "--redis-url", redis_url, "--assignment", "auto", "--offer-timeout", str(OFFER_TIMEOUT),
        "--start-rate", "1000", "--rate-limit", "1000", "--rate-burst", "1000",
    )  # fmt: skip
    one = server_process(*flags, env=REDIS_ON)
    two = server_process(*flags, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        await waiting(http, *(f"p{n}" for n in range(CONVERSATIONS)), base=one.url)
        for agent_id in AGENTS:
            await set_status(http, agent_id, "online", capacity=1, base=two.url)
        await check_routing_invariants(http, [one.url, two.url])


# --- 4. Transfers --------------------------------------------------------------------------


async def test_a_manual_transfer_to_an_agent(make_client: MakeClient, settings: Settings) -> None:
    client = await routed(make_client, settings, assignment="manual")
    await set_status(client, "alice", "online", capacity=2)
    await set_status(client, "bob", "online", capacity=2)
    await waiting(client, "t1")
    await act(client, "t1", "takeover", "alice")
    async with open_stream(client, session_events("t1")) as (customer, _):
        moved = await transfer(client, "t1", agent_id="alice", to_agent_id="bob", note="wants a refund")
        assert moved["status"] == "agent_active" and moved["agent_id"] == "bob", moved
        assert moved["handoff_summary"] == "wants a refund" and moved["escalation_reason"] == "transfer"
        await notice(customer, TRANSFER_NOTICE)
    state = await session(client, "t1")
    assert state["agent_id"] == "bob" and state["handoff_summary"] == "wants a refund", state
    load = await agents(client)
    assert load["alice"]["active"] == 0 and load["bob"]["active"] == 1, load
    # The new holder may speak; the one before may not.
    said = await call_json(
        client, "POST", f"{WORKBENCH}/sessions/t1/messages", {"agent_id": "bob", "content": "hi, Bob here"}
    )
    assert said["message"]["agent_id"] == "bob"
    reply = await send(
        client, "POST", f"{WORKBENCH}/sessions/t1/messages", {"agent_id": "alice", "content": "x"}
    )
    assert reply.status == 409, reply.body


async def test_a_transfer_to_the_queue_goes_to_its_front(make_client: MakeClient, settings: Settings) -> None:
    client = await routed(make_client, settings, assignment="manual")
    await set_status(client, "alice", "online")
    await waiting(client, "front")
    await act(client, "front", "takeover", "alice")
    await waiting(client, "w1", "w2")
    async with open_stream(client, session_events("front")) as (customer, _):
        moved = await transfer(client, "front", agent_id="alice", to_queue=True, note="needs billing")
        assert moved["status"] == "waiting_agent" and moved["agent_id"] is None, moved
        assert moved["escalation_reason"] == "transfer" and moved["handoff_summary"] == "needs billing"
        await notice(customer, TRANSFER_NOTICE)
    assert [await position(client, n) for n in ("front", "w1", "w2")] == [1, 2, 3]
    queue = await listed(client, "waiting_agent")
    assert [s["session_name"] for s in queue] == ["front", "w1", "w2"], queue
    assert (await agents(client))["alice"]["active"] == 0


async def test_a_conversation_handed_to_the_queue_is_not_offered_back_at_once(
    make_client: MakeClient, settings: Settings
) -> None:
    """Auto: the agent who sends a conversation back to the queue is not its next offer (as if
    it had declined it); with nobody else online, it is offered back after the cool-off."""
    client = await routed(make_client, settings, offer_timeout=1.0)
    await waiting(client, "back")
    await act(client, "back", "takeover", "alice")  # before anyone is online: no offers
    async with open_streams(client, agent_events("alice"), agent_events("bob")) as (alice, bob):
        await set_status(client, "alice", "online", capacity=2)
        await set_status(client, "bob", "online", capacity=1)
        handed = await transfer(client, "back", agent_id="alice", to_queue=True, note="billing")
        assert set(handed["declined"]) == {"alice"}, handed
        assert (await next_offer(bob, "back")).payload["summary"] == "billing"
        await assert_no_offer(alice)
        await agent_move(client, "back", "decline", "bob")
        # Both declined now; alice's cool-off ends first, so it comes back to her.
        offer = await next_offer(alice, "back")
        assert offer.payload["session_name"] == "back"


async def test_an_auto_transfer_is_an_offer_to_the_named_agent(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await routed(make_client, settings)
    await waiting(client, "a1")
    await act(client, "a1", "takeover", "alice")  # before anyone is online: no offers
    async with open_streams(client, agent_events("bob"), agent_events("carol")) as (bob, carol):
        await set_status(client, "alice", "online", capacity=1)
        await set_status(client, "bob", "online", capacity=1)
        await set_status(client, "carol", "online", capacity=5)  # most room, but not named
        moved = await transfer(client, "a1", agent_id="alice", to_agent_id="bob", note="VIP")
        assert moved["status"] == "waiting_agent", moved
        assert moved["offer"]["agent_id"] == "bob" and moved["offer"]["kind"] == "transfer", moved
        offer = await next_offer(bob, "a1")
        assert offer.payload["reason"] == "transfer" and offer.payload["summary"] == "VIP", offer
        load = await agents(client)
        assert load["alice"]["active"] == 0 and load["bob"]["active"] == 1, load
        accepted = await agent_move(client, "a1", "accept", "bob")
        assert accepted["status"] == "agent_active" and accepted["agent_id"] == "bob", accepted
        assert accepted["handoff_summary"] == "VIP"
        await assert_no_offer(carol)
    # Auto: the receiver must be online (away will not do).
    await set_status(client, "carol", "away")
    reply = await send(
        client, "POST", f"{WORKBENCH}/sessions/a1/transfer", {"agent_id": "bob", "to_agent_id": "carol"}
    )
    assert reply.status == 409 and reply.body["error"]["code"] == "agent_unavailable", reply.body
    assert (await session(client, "a1"))["agent_id"] == "bob"


async def test_transfers_that_are_refused(make_client: MakeClient, settings: Settings) -> None:
    client = await routed(make_client, settings, assignment="manual")
    await set_status(client, "alice", "online", capacity=3)
    await set_status(client, "full", "online", capacity=1)
    await waiting(client, "r1", "r2")
    await act(client, "r1", "takeover", "alice")
    await act(client, "r2", "takeover", "full")
    url = f"{WORKBENCH}/sessions/r1/transfer"

    async def refused(body: dict[str, Any], status: int, code: str) -> None:
        reply = await send(client, "POST", url, body)
        assert reply.status == status and reply.body["error"]["code"] == code, (body, reply.body)

    await refused({"agent_id": "alice", "to_agent_id": "nobody"}, 409, "agent_unavailable")  # offline
    await refused({"agent_id": "alice", "to_agent_id": "full"}, 409, "at_capacity")
    await refused({"agent_id": "bob", "to_agent_id": "full"}, 409, "at_capacity")  # checked first
    await set_status(client, "carol", "online")
    await refused({"agent_id": "bob", "to_agent_id": "carol"}, 409, "conflict")  # not the holder
    await refused({"agent_id": "bob", "to_queue": True}, 409, "conflict")
    await refused({"agent_id": "alice", "to_agent_id": "alice"}, 409, "conflict")
    await refused({"agent_id": "alice"}, 400, "validation_error")  # neither
    await refused({"agent_id": "alice", "to_agent_id": "carol", "to_queue": True}, 400, "validation_error")
    await refused({"agent_id": "alice", "to_queue": False}, 400, "validation_error")
    state = await session(client, "r1")
    assert state["status"] == "agent_active" and state["agent_id"] == "alice", state
    load = await agents(client)
    assert (load["alice"]["active"], load["full"]["active"], load["carol"]["active"]) == (1, 1, 0), load


# --- 5. An agent going offline -----------------------------------------------------------


async def test_an_offline_agents_conversations_go_to_the_front(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await routed(make_client, settings, assignment="manual")
    await set_status(client, "alice", "online", capacity=3)
    await waiting(client, "o1")
    await act(client, "o1", "takeover", "alice")
    await waiting(client, "early", "late")
    async with open_stream(client, session_events("o1")) as (customer, _):
        await set_status(client, "alice", "offline")
        await notice(customer, AGENT_OFFLINE_NOTICE)
    state = await session(client, "o1")
    assert state["status"] == "waiting_agent" and state["agent_id"] is None, state
    assert state["escalation_reason"] == "agent_offline", state
    assert [await position(client, n) for n in ("o1", "early", "late")] == [1, 2, 3]
    load = await agents(client)
    assert load["alice"]["status"] == "offline" and load["alice"]["active"] == 0, load
    said = await transcript(client, "o1")
    assert [m["content"] for m in said].count(AGENT_OFFLINE_NOTICE) == 1, said


# --- 6. Wait timeout ----------------------------------------------------------------------


async def test_a_long_wait_goes_back_to_the_bot_once(make_client: MakeClient, settings: Settings) -> None:
    """Against Redis, two apps (two routers) share the queue: the timeout acts once."""
    clients = [await routed(make_client, settings, wait_timeout=1.0, assignment="manual")]
    if settings.use_redis:
        clients.append(await routed(make_client, settings, wait_timeout=1.0, assignment="manual"))
    client = clients[0]
    await create(client, "slow")
    async with open_stream(client, session_events("slow")) as (customer, _):
        await escalate(client, "slow")
        await notice(customer, WAIT_TIMEOUT_NOTICE)
    state = await session(client, "slow")
    assert state["status"] == "bot_active" and state["escalation_reason"] == "wait_timeout", state
    assert state.get("handoff_summary") is None
    # Another conversation's timeout later: every router has had its rounds since.
    await waiting(clients[-1], "later")
    await until(
        lambda: session(client, "later"),
        lambda s: s["status"] == "bot_active",
        timeout=ROUTED,
        what="later timed out",
    )
    said = await transcript(client, "slow")
    assert [m["content"] for m in said].count(WAIT_TIMEOUT_NOTICE) == 1, said
    # The bot answers it again.
    answer = await call_json(client, "POST", f"{CHATBOT}/chat", {"session_name": "slow", "content": "hello"})
    assert answer["reply"] is not None, answer


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_the_wait_timeout_counts_from_the_escalation_itself(
    make_client: MakeClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round at 0.5 s into a 1 s wait leaves the conversation waiting. The clock reads
    ``entered`` when the escalation is stored (a whole-second ``waiting_since`` made it fire up
    to 1 s early); the app's own router has no wait timeout, a router of the same app with one
    is driven by hand."""
    client = await routed(make_client, settings, assignment="manual")
    entered = 1_900_000_000.9
    monkeypatch.setattr(rules, "clock", lambda: entered)
    await waiting(client, "punctual")
    router = replace(router_of(client.app), policy=RoutingPolicy(wait_timeout=1.0, customer_idle=0))
    await router.round(entered + 0.5)
    assert (await session(client, "punctual"))["status"] == "waiting_agent"
    await router.round(entered + 1.0)
    assert (await session(client, "punctual"))["status"] == "bot_active"


# --- 7. Customer idle ---------------------------------------------------------------------


async def test_a_conversation_whose_customer_is_gone_is_closed(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await routed(make_client, settings, customer_idle=1.0, assignment="manual")
    await set_status(client, "alice", "online", capacity=2)
    await create(client, "here")  # first: without its stream it would be closed first
    async with open_stream(client, session_events("here")):
        await waiting(client, "gone")
        await act(client, "gone", "takeover", "alice")
        closed = await until(
            lambda: session(client, "gone"),
            lambda s: s["status"] == "closed",
            timeout=ROUTED,
            what="gone closed",
        )
        assert closed["closed_reason"] == "customer_idle", closed
        assert (await session(client, "here"))["status"] == "bot_active"
    said = await transcript(client, "gone")
    assert [m["content"] for m in said].count(IDLE_NOTICE) == 1, said
    assert (await agents(client))["alice"]["active"] == 0
    # Its stream closed, "here" goes too.
    closed = await until(
        lambda: session(client, "here"), lambda s: s["status"] == "closed", timeout=ROUTED, what="here closed"
    )
    assert closed["closed_reason"] == "customer_idle", closed


# --- 8. Redis Cluster ---------------------------------------------------------------------


async def test_on_a_redis_cluster(make_client: MakeClient, cluster_url: str) -> None:
    client = await routed(make_client, Settings(redis_url=cluster_url, insecure=True))
    async with open_stream(client, agent_events("carol")) as (carol, _):
        await set_status(client, "carol", "online", capacity=1)
        await waiting(client, "k1")
        offer = await next_offer(carol, "k1")
        assert offer.payload["expires_at"] > time.time(), offer
        accepted = await agent_move(client, "k1", "accept", "carol")
        assert accepted["status"] == "agent_active" and accepted["agent_id"] == "carol", accepted
        await waiting(client, "k2")  # carol is full: no offer
        assert (await session(client, "k2")).get("offer") is None
        async with open_stream(client, session_events("k1")) as (customer, _):
            await set_status(client, "carol", "offline")
            await notice(customer, AGENT_OFFLINE_NOTICE)
    state = await session(client, "k1")
    assert state["status"] == "waiting_agent" and state["escalation_reason"] == "agent_offline", state
    assert [await position(client, n) for n in ("k1", "k2")] == [1, 2]
    assert (await agents(client))["carol"]["active"] == 0


async def test_without_idle_closing_no_customer_is_noted(make_client: MakeClient, settings: Settings) -> None:
    """--customer-idle 0: no report runs, so nothing is noted for one (it would only grow)."""
    client = await routed(make_client, settings, assignment="manual")
    for n in range(3):
        await create(client, f"quiet-{n}")
        await call_json(client, "POST", f"{CHATBOT}/chat", {"session_name": f"quiet-{n}", "content": "hi"})
    assert client.app[CUSTOMERS_ACTIVE] == set()
    assert await client.app[BACKENDS].customers.away_since(time.time() + 1, 10) == []
