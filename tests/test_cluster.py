"""Redis Cluster mode against a real 3-master cluster (tests/redis_cluster.py): the sharded
broker, the session store, two real ``run.py`` processes, and a shard outage.

Real parts only, all on 127.0.0.1: the suite's cluster (session-scoped, flushed before each
test by the ``cluster_url`` fixture), the app's own backends (``open_backends``), real server
processes and real HTTP/SSE clients. Names are picked by hashing, so that what a test means to
spread over several shards really lives on several shards.

What these tests prove:

* broker: events on session channels owned by different primaries reach their subscriptions;
  a session channel's tag is the session name, so its history, clock, wire channel and the
  session's store keys share one slot on the owning shard; an agent stream (agent channel +
  broadcast, tag ``sse:workbench``) gets both channels with strictly increasing ids; a resume
  replays exactly the missed events, and one older than the trimmed history says
  ``recovered: false``; the process holds one pub/sub connection per primary whatever the
  number of subscriptions, on sharded pub/sub only (SHARDNUMSUB of each wire channel 1 while
  subscribed, 0 after; classic NUMSUB always 0);
* store: the session lifecycle and the queue order with sessions on several shards; of 20
  concurrent takeovers through 20 cluster clients exactly one wins;
* processes: the whole handoff across a ``--chatbot`` and a ``--workbench`` process on the
  cluster, ``/health`` saying ``redis-cluster``, and resumes with Last-Event-ID;
* outage (a primary killed, then restarted; the cluster is restored in ``finally``):
  - the session's own shard dead: a session on another shard still works right after the kill
    (before the cluster declares itself failed, ~2-4 s later); every request on the session
    answers 503 JSON with Retry-After, and nothing was written or published elsewhere;
  - the workbench shard dead: a chat in a session held by an agent is accepted at once (its
    session-channel event is out at once); the agent channel's copy waits in the broker's
    outbox and reaches the agent's stream, resumed with Last-Event-ID, exactly once after the
    restart; /health is degraded, then ok, on ``redis-cluster`` throughout. An escalation is
    refused there (503, its session unchanged): ``sessions:status_seq``, which every status
    change increments before its commit, hashes to the workbench shard in this harness.
"""

import asyncio
import functools
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import replace
from typing import Any, cast

import aiohttp
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as ClusterClient

from app.backends import Backends, cluster_clients, open_backends
from app.domain.announcements import of_transition
from app.domain.store import RedisSessionStore, Transition, TransitionRefused
from app.domain.store.redis_indexes import StoreKeys
from app.process.settings import Settings
from realtime.channels import BROADCAST, agent_channel, session_channel
from realtime.cluster_broker import OUTBOX_RETRY, ClusterLayout
from realtime.cluster_pipes import ClusterPipes
from realtime.command_pipe import PipeScript
from realtime.event_log import RedisEventLog
from realtime.events import envelope
from realtime.redis_replies import as_text
from realtime.session_outbox import SessionOutboxes
from tests.support import wait
from tests.support.api import (
    Reply,
    act,
    agent_events,
    agent_say,
    call,
    chat,
    create,
    escalate,
    health,
    send,
    session_events,
)
from tests.support.broker import assert_quiet, event
from tests.support.broker import take as contract_take
from tests.support.checks import check_envelope, check_strictly_increasing, wire
from tests.support.handoff import run_handoff
from tests.support.processes import REDIS_ON, StartServer
from tests.support.readers import Collector, ReconnectingReader
from tests.support.redis_cluster import RedisCluster
from tests.support.sse import SSEEvent, SSEStream, open_stream
from tests.support.store import (
    CONCURRENCY,
    HOLDER,
    OTHER,
    assert_one_winner,
    status_sets_holding,
)

session_key, messages_key = StoreKeys().session, StoreKeys().messages

logger = logging.getLogger(__name__)


PROBE = "cluster-test-probe"  # client name of the inspecting connections (left out of counts)
LAYOUT = ClusterLayout()
MAX_SEARCH = 5000  # names tried when looking for one on a given shard
SETTLE = 3.0  # bound for anything that should happen "soon"
QUIET = 0.3
RECOVERY = 20.0  # bound for a process to be back on a restarted node


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def admin(redis_cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    """A cluster client of the test's own (slot map, key reads), not the app's."""
    client = ClusterClient(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in redis_cluster.ports],
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
    )
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
async def node_clients(redis_cluster: RedisCluster) -> AsyncIterator[dict[int, Redis]]:
    """A plain client per primary, by port, for per-node commands (CLIENT LIST, PUBSUB)."""
    clients = {
        port: Redis(
            host="127.0.0.1",
            port=port,
            decode_responses=True,
            client_name=PROBE,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
        )
        for port in redis_cluster.ports
    }
    yield clients
    for client in clients.values():
        await client.aclose()


@pytest.fixture
async def make_backends(cluster_url: str) -> AsyncIterator[Callable[..., Awaitable[Backends]]]:
    """``await make_backends(**settings)``: the app's backends on the cluster, closed after."""
    opened: list[Backends] = []

    async def make(**changes: Any) -> Backends:
        settings = replace(Settings(redis_url=cluster_url, insecure=True), **changes)
        backends = await open_backends(settings)
        opened.append(backends)
        return backends

    yield make
    for backends in reversed(opened):
        await backends.close()


# --------------------------------------------------------------------------- helpers


def port_of(admin: ClusterClient, key: str) -> int:
    """The port of the primary that owns ``key``'s slot."""
    node = admin.get_node_from_key(key)
    assert node is not None, key
    return int(node.port)


def channel_port(admin: ClusterClient, channel: str) -> int:
    """The port of the primary that owns ``channel`` (its history, clock and SPUBLISH)."""
    return port_of(admin, LAYOUT.clock_key((channel,)))


def key_port(admin: ClusterClient, name: str) -> int:
    """The port of the primary that holds session ``name`` in the store."""
    return port_of(admin, session_key(name))


def held_on(admin: ClusterClient, port: int) -> Callable[[str], bool]:
    """A filter of session names: those whose keys live on the primary at ``port``."""
    return lambda name: key_port(admin, name) == port


async def command(node: Redis, *args: str) -> Any:
    """A raw command to one node, as the server sees it."""
    return await node.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def find_name(prefix: str, wanted: Callable[[str], bool], taken: Iterable[str] = ()) -> str:
    """The first ``prefix-N`` that satisfies ``wanted`` (bounded search)."""
    skip = set(taken)
    for i in range(MAX_SEARCH):
        name = f"{prefix}-{i}"
        if name not in skip and wanted(name):
            return name
    raise AssertionError(f"no name {prefix}-N found in {MAX_SEARCH} tries")


def sessions_per_node(admin: ClusterClient, prefix: str, per_node: int = 1) -> dict[int, list[str]]:
    """``per_node`` session names whose channel lives on each primary, by port."""
    found: dict[int, list[str]] = {}
    ports = {int(node.port) for node in admin.get_primaries()}
    for i in range(MAX_SEARCH):
        name = f"{prefix}-{i}"
        names = found.setdefault(channel_port(admin, session_channel(name)), [])
        if len(names) < per_node:
            names.append(name)
        if set(found) == ports and all(len(v) == per_node for v in found.values()):
            return found
    raise AssertionError(f"not {per_node} names on every node: {found}")


# The broker contract's helpers, with the cluster's own bound for "soon".
take = functools.partial(contract_take, timeout=SETTLE)


async def poll(
    fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float, interval: float = 0.05
) -> Any:
    """Call ``fetch`` until ``done(value)`` (bounded; a refused connection is a miss); the last
    value."""
    return await wait.eventually(
        fetch, done, timeout=timeout, interval=interval, ignore=(aiohttp.ClientError, OSError)
    )


def is_subscriber(entry: dict[str, str]) -> bool:
    """A connection with any pub/sub subscription (Redis 7.0 reports sub, psub and ssub)."""
    return any(int(entry.get(field, 0)) > 0 for field in ("sub", "psub", "ssub"))


async def subscribers_of(node: Redis) -> list[dict[str, str]]:
    return [e for e in await node.client_list() if e.get("name") != PROBE and is_subscriber(e)]


async def shard_numsub(node: Redis, wire_channel: str) -> int:
    [_, count] = await command(node, "PUBSUB", "SHARDNUMSUB", wire_channel)
    return int(count)


async def classic_numsub(nodes: Iterable[Redis], channels: Iterable[str]) -> dict[str, int]:
    """PUBSUB NUMSUB of ``channels`` summed over every node."""
    channels = list(channels)
    totals = dict.fromkeys(channels, 0)
    for node in nodes:
        for channel, count in await node.pubsub_numsub(*channels):
            totals[as_text(channel)] += int(count)
    return totals


# --------------------------------------------------------------------------- 1. broker


async def test_session_channels_on_different_nodes_reach_their_subscriptions(
    make_backends: Callable[..., Awaitable[Backends]],
    admin: ClusterClient,
    node_clients: dict[int, Redis],
) -> None:
    """One session per primary: each subscription gets exactly its own channel's events, with
    the ids publish returned, in order; history and clock keys live on the owning node."""
    backends = await make_backends()
    assert backends.mode == "redis-cluster"
    broker = backends.broker
    placed = sessions_per_node(admin, "spread")
    assert len(placed) == 3  # every primary owns one of the channels
    channels = {port: session_channel(names[0]) for port, names in placed.items()}
    # The slot the client computes is the one the server computes (CLUSTER KEYSLOT).
    for port, channel in channels.items():
        clock = LAYOUT.clock_key((channel,))
        assert int(await command(node_clients[port], "CLUSTER", "KEYSLOT", clock)) == (admin.keyslot(clock))

    async with AsyncExitStack() as stack:
        subs = {
            port: await stack.enter_async_context(broker.subscribe(channel))
            for port, channel in channels.items()
        }
        twin_port = next(iter(channels))
        twin = await stack.enter_async_context(broker.subscribe(channels[twin_port]))
        published: dict[int, list[str]] = {port: [] for port in channels}
        for n in range(5):
            for port, channel in channels.items():
                published[port].append(await broker.publish(channel, event(n, channel[12:])))
        for port, subscription in subs.items():
            received = await take(subscription, 5)
            assert [e.id for e in received] == published[port], port
            assert {e.channel for e in received} == {channels[port]}
            assert [e.envelope["payload"]["agent_id"] for e in received] == [f"a{n}" for n in range(5)]
            await assert_quiet(subscription, 0.1)
        assert [e.id for e in await take(twin, 5)] == published[twin_port]
        await assert_quiet(twin, 0.1)

    for port, channel in channels.items():
        node = node_clients[port]
        name = channel.removeprefix("sse:session:")
        history, clock = LAYOUT.history_key(channel), LAYOUT.clock_key((channel,))
        # The session name is the tag: the channel, its keys and the session's store keys
        # hash to one slot (a session's state and its events live on one shard).
        assert LAYOUT.wire(channel) == f"{{{name}}}{channel}"
        assert (history, clock) == (f"history:{{{name}}}{channel}", f"clock:{{{name}}}")
        slot = admin.keyslot(session_key(name))
        assert {admin.keyslot(k) for k in (messages_key(name), history, clock, LAYOUT.wire(channel))} == {
            slot
        }
        assert int(await command(node, "CLUSTER", "KEYSLOT", LAYOUT.wire(channel))) == slot
        assert key_port(admin, name) == port
        # Plain GET/XLEN on the owner: no MOVED, the keys are there.
        assert await node.xlen(history) == 5
        assert await node.get(clock) == published[port][-1]


async def test_agent_stream_ids_strictly_increase_across_both_channels(
    make_backends: Callable[..., Awaitable[Backends]],
    admin: ClusterClient,
) -> None:
    """An agent subscription (agent channel + broadcast) gets every event of both channels,
    published concurrently, with strictly increasing ids: both share one slot and one clock."""
    broker = (await make_backends()).broker
    agent = agent_channel("ann")
    assert channel_port(admin, agent) == channel_port(admin, BROADCAST)
    assert LAYOUT.wire(agent) == "{sse:workbench}sse:agent:ann"
    rounds = 40
    async with broker.subscribe(agent, BROADCAST) as subscription:
        published: list[str] = []
        async with asyncio.timeout(10):
            for n in range(rounds):
                published.extend(
                    await asyncio.gather(
                        broker.publish(agent, event(2 * n)),
                        broker.publish(BROADCAST, event(2 * n + 1)),
                    )
                )
        received = await take(subscription, 2 * rounds, timeout=10)
        await assert_quiet(subscription)
    keys = [e.key for e in received]
    assert all(a < b for a, b in itertools.pairwise(keys)), [e.id for e in received]
    assert sorted(e.id for e in received) == sorted(published)
    # Even numbers went to the agent channel, odd ones to the broadcast.
    assert all(
        (e.channel == agent) == (int(e.envelope["payload"]["agent_id"][1:]) % 2 == 0) for e in received
    ), [(e.channel, e.envelope["payload"]["agent_id"]) for e in received]


async def test_resume_replays_exactly_the_missed_events(
    make_backends: Callable[..., Awaitable[Backends]],
    admin: ClusterClient,
) -> None:
    """Session and agent subscriptions resumed from an earlier id get exactly the later events
    (recovered), then live ones; nothing twice."""
    broker = (await make_backends()).broker
    name = find_name("resume", lambda n: True)
    channel = session_channel(name)
    published = [await broker.publish(channel, event(n, name)) for n in range(8)]
    async with broker.subscribe(channel, resume_from=published[2]) as subscription:
        assert subscription.recovered
        assert subscription.position == published[2]
        replay = await take(subscription, 5)
        assert [e.id for e in replay] == published[3:]
        live = await broker.publish(channel, event(99, name))
        assert [e.id for e in await take(subscription, 1)] == [live]
        await assert_quiet(subscription)

    agent = agent_channel("bob")
    both = [await broker.publish((agent, BROADCAST)[n % 2], event(n)) for n in range(9)]
    async with broker.subscribe(agent, BROADCAST, resume_from=both[0]) as subscription:
        assert subscription.recovered
        assert [e.id for e in await take(subscription, 8)] == both[1:]
        await assert_quiet(subscription)


async def test_resume_older_than_the_trimmed_history_is_not_recovered(
    make_backends: Callable[..., Awaitable[Backends]],
    node_clients: dict[int, Redis],
    admin: ClusterClient,
) -> None:
    """With history_size 10, a resume from the first of 300 events says recovered False and
    gets what the history still holds; a resume inside it is recovered."""
    broker = (await make_backends(history_size=10)).broker
    name = find_name("trim", lambda n: True)
    channel = session_channel(name)
    published = [await broker.publish(channel, event(n, name)) for n in range(300)]
    kept = await node_clients[channel_port(admin, channel)].xlen(LAYOUT.history_key(channel))
    assert 10 <= kept < 300, kept  # MAXLEN ~ trims whole stream nodes
    async with broker.subscribe(channel, resume_from=published[0]) as subscription:
        assert not subscription.recovered
        left = await take(subscription, kept)
        assert [e.id for e in left] == published[-kept:]
        await assert_quiet(subscription)
    async with broker.subscribe(channel, resume_from=published[-4]) as subscription:
        assert subscription.recovered
        assert [e.id for e in await take(subscription, 3)] == published[-3:]
        await assert_quiet(subscription)


async def test_one_sharded_pubsub_connection_per_primary(
    make_backends: Callable[..., Awaitable[Backends]],
    admin: ClusterClient,
    node_clients: dict[int, Redis],
) -> None:
    """65 subscriptions (30 session channels, 10 per primary, each subscribed twice, and 5
    agent streams) hold exactly one pub/sub connection per primary, sharded pub/sub only:
    SHARDNUMSUB is 1 on the owner while subscribed and 0 shortly after leaving; classic
    NUMSUB is 0 throughout."""
    broker = (await make_backends()).broker
    placed = sessions_per_node(admin, "conn", per_node=10)
    sessions = [session_channel(n) for names in placed.values() for n in names]
    agents = [agent_channel(f"agent-{i}") for i in range(5)]
    wires_on: dict[int, set[str]] = {port: set() for port in node_clients}
    for channel in [*sessions, *agents, BROADCAST]:
        wires_on[channel_port(admin, channel)].add(LAYOUT.wire(channel))
    assert all(wires_on.values())  # every primary has channels

    first, second = sessions[::2], sessions[1::2]
    async with AsyncExitStack() as stack:
        async with AsyncExitStack() as leaving:
            for channel in first:
                await stack.enter_async_context(broker.subscribe(channel))
                await stack.enter_async_context(broker.subscribe(channel))
            for channel in second:
                await leaving.enter_async_context(broker.subscribe(channel))
                await leaving.enter_async_context(broker.subscribe(channel))
            for channel in agents:
                await stack.enter_async_context(broker.subscribe(channel, BROADCAST))

            for port, node in node_clients.items():
                subscribers = await subscribers_of(node)
                assert len(subscribers) == 1, (port, subscribers)
                [entry] = subscribers
                assert (entry["sub"], entry["psub"]) == ("0", "0"), entry
                assert int(entry["ssub"]) == len(wires_on[port]), (entry, wires_on[port])
                assert set(await command(node, "PUBSUB", "SHARDCHANNELS")) == wires_on[port]
                assert await node.pubsub_channels() == []
                for wire_channel in wires_on[port]:
                    assert await shard_numsub(node, wire_channel) == 1, wire_channel
            logical = [*sessions, *agents, BROADCAST]
            everything = [*logical, *map(LAYOUT.wire, logical)]
            # A session's wire name is not its name: the count above is not vacuous.
            assert all(LAYOUT.wire(c) != c for c in [*sessions, *agents, BROADCAST])
            assert set((await classic_numsub(node_clients.values(), everything)).values()) == {0}
        # ``second`` left: released on the server, ``first`` still held.

        async def counts(channels: list[str]) -> list[int]:
            """SHARDNUMSUB of each channel's wire name, on its owner."""
            return [
                await shard_numsub(node_clients[channel_port(admin, c)], LAYOUT.wire(c)) for c in channels
            ]

        after = await poll(lambda: counts(second), lambda v: set(v) == {0}, SETTLE)
        assert set(after) == {0}, after
        assert set(await counts(first)) == {1}
        assert broker.local_channels == len(first) + len(agents) + 1
    after = await poll(lambda: counts([*sessions, *agents, BROADCAST]), lambda v: set(v) == {0}, SETTLE)
    assert set(after) == {0}, after
    for port, node in node_clients.items():
        assert await command(node, "PUBSUB", "SHARDCHANNELS") == [], port
        assert await subscribers_of(node) == [], port  # the connection stays, subscribed to nothing
    assert broker.local_channels == 0


# --------------------------------------------------------------------------- 2. store


async def test_session_lifecycle_and_queue_order_on_the_cluster(
    make_backends: Callable[..., Awaitable[Backends]],
    admin: ClusterClient,
) -> None:
    """create, escalate, takeover, messages, release, close with sessions on every shard:
    the stored session, its transcript and exactly one status set agree at every step;
    list_sessions is first come, first served across shards."""
    store = (await make_backends()).store
    ports = {int(node.port) for node in admin.get_primaries()}
    names: list[str] = []
    for port in sorted(ports):
        names.append(find_name("life", held_on(admin, port), names))
        names.append(find_name("life", held_on(admin, port), names))
    assert {key_port(admin, n) for n in names} == ports

    async def check(name: str, status: str, agent: str | None) -> None:
        stored = await store.get(name)
        assert (stored["status"], stored["agent_id"]) == (status, agent), stored
        raw = await admin.get(session_key(name))
        assert raw is not None and json.loads(raw) == stored
        assert await status_sets_holding(admin, name) == [status]

    name = names[0]
    created = await store.create(name)
    assert created["status"] == "bot_active"
    await check(name, "bot_active", None)
    await store.add_message(name, "customer", "hello")
    await store.add_message(name, "bot", "hi there")
    moved = await store.apply(name, "escalate", reason="customer asked for a human")
    assert moved.changed and moved.previous_status == "bot_active"
    await check(name, "waiting_agent", None)
    assert (await store.apply(name, "escalate")).changed is False  # idempotent
    taken = await store.apply(name, "takeover", HOLDER)
    assert taken.changed and taken.session["agent_id"] == HOLDER
    await check(name, "agent_active", HOLDER)
    with pytest.raises(TransitionRefused):
        await store.apply(name, "takeover", OTHER)
    with pytest.raises(TransitionRefused):
        await store.add_message(name, "agent", "not mine", OTHER)
    await store.add_message(name, "agent", "I am Alice", HOLDER)
    await store.add_message(name, "customer", "thanks Alice")
    with pytest.raises(TransitionRefused):
        await store.apply(name, "release", OTHER)
    released = await store.apply(name, "release", HOLDER)
    assert released.changed and released.session["agent_id"] is None
    await check(name, "bot_active", None)
    closed = await store.apply(name, "close")
    assert closed.changed
    await check(name, "closed", None)
    with pytest.raises(TransitionRefused):
        await store.add_message(name, "customer", "too late")
    transcript = (await store.messages(name)).items
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("customer", "hello"),
        ("bot", "hi there"),
        ("agent", "I am Alice"),
        ("customer", "thanks Alice"),
    ]
    assert await admin.llen(messages_key(name)) == 4

    # The queue: the others escalated in a scrambled order, on every shard.
    queue = [names[3], names[1], names[5], names[2], names[4]]
    for other in names[1:]:
        await store.create(other)
    for other in queue:
        await store.apply(other, "escalate")
    assert [s["session_name"] for s in (await store.list_sessions("waiting_agent")).items] == queue
    await store.apply(queue[2], "takeover", HOLDER)
    await store.apply(queue[0], "takeover", OTHER)
    assert [s["session_name"] for s in (await store.list_sessions("waiting_agent")).items] == [
        queue[1],
        queue[3],
        queue[4],
    ]
    assert [s["session_name"] for s in (await store.list_sessions("agent_active")).items] == [
        queue[2],
        queue[0],
    ]
    assert [s["session_name"] for s in (await store.list_sessions("closed")).items] == [name]
    assert (await store.list_sessions("bot_active")).items == []


async def test_concurrent_takeovers_across_cluster_clients(
    cluster_url: str,
    admin: ClusterClient,
) -> None:
    """20 agents, each through its own cluster client and store (20 processes), take over one
    waiting session at once: exactly one wins, 19 are refused; the session is agent_active
    with the winner and only in the agent_active set. Three rounds, one session per shard."""
    settings = Settings(redis_url=cluster_url, insecure=True)
    clients = [cluster_clients(settings)[0] for _ in range(CONCURRENCY)]
    stores = [RedisSessionStore(client) for client in clients]
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(client.initialize() for client in clients))
        names = [find_name("race", held_on(admin, int(node.port))) for node in admin.get_primaries()]
        agents = [f"agent{i}" for i in range(CONCURRENCY)]
        for name in names:
            await stores[0].create(name)
            await stores[0].apply(name, "escalate")
            await asyncio.gather(*(client.ping() for client in clients))
            async with asyncio.timeout(10):
                results = await asyncio.gather(
                    *(s.apply(name, "takeover", a) for s, a in zip(stores, agents, strict=True)),
                    return_exceptions=True,
                )
            winner = assert_one_winner(results, agents)
            assert all(isinstance(r, (Transition, TransitionRefused)) for r in results)
            stored = await stores[-1].get(name)
            assert (stored["status"], stored["agent_id"]) == ("agent_active", winner)
            assert await status_sets_holding(admin, name) == ["agent_active"]
            assert name not in [
                s["session_name"] for s in (await stores[1].list_sessions("waiting_agent")).items
            ]
            assert name in [s["session_name"] for s in (await stores[1].list_sessions("agent_active")).items]
    finally:
        for store, client in zip(stores, clients, strict=True):
            await store.close()
            await client.aclose()


# --------------------------------------------------------------------------- 3. processes


async def test_handoff_and_resume_across_two_processes_on_the_cluster(
    server_process: StartServer,
    cluster_url: str,
) -> None:
    """A --chatbot and a --workbench process on the cluster: /health says redis-cluster; the
    whole handoff works across them (tests.test_processes.run_handoff); a customer stream and
    an agent stream that reconnect with Last-Event-ID get exactly what they missed."""
    chatbot = server_process("--chatbot", "--redis-url", cluster_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", cluster_url, env=REDIS_ON)
    bot, desk = chatbot.url, workbench.url
    async with aiohttp.ClientSession() as http:
        for process, component in ((chatbot, "chatbot"), (workbench, "workbench")):
            body = await health(http, process.url)
            assert body["broker"] == "redis-cluster", body
            assert body["status"] == "ok" and body["degraded"] is False, body
            assert body["components"] == [component], body

        await run_handoff(http, bot, desk, "cluster-handoff", "agent-c")

        name, agent = "cluster-resume", "agent-r"
        await create(http, name, base=bot)
        async with (
            open_stream(http, desk + session_events(name, "workbench")) as (watch, _),
            open_stream(http, desk + agent_events(agent)) as (agent_watch, _),
        ):
            async with (
                open_stream(http, bot + session_events(name)) as (customer, connected),
                open_stream(http, desk + agent_events(agent)) as (agent_view, _),
            ):
                assert connected.payload["recovered"] is True, connected
                await chat(http, name, "hello", base=bot)
                seen = await customer.take(2)
                await escalate(http, name, base=bot)
                [transfer] = await agent_view.take(1)
                assert transfer.type == "transfer_request", transfer
                assert transfer.id is not None
                check_envelope(transfer, "ai_chatbot")
            # Both streams are gone: the conversation goes on without them.
            await act(http, name, "takeover", agent, base=desk)
            await chat(http, name, "where is my parcel?", base=bot)
            await agent_say(http, name, agent, "On its way.", base=desk)
            await act(http, name, "release", agent, base=desk)
            everything = await watch.take(2 + 1 + 2 + 1 + 1 + 2)
            assert wire(everything[:2]) == wire(seen)
            missed = everything[2:]  # the customer stream was open for the escalation, unread
            assert [e.type for e in missed] == [
                "status_change",
                "agent_joined",
                "status_change",
                "new_message",
                "new_message",
                "agent_left",
                "status_change",
            ], wire(missed)
            agent_everything = await agent_watch.take(1 + 1 + 1 + 1)
            assert wire(agent_everything[:1]) == wire([transfer])
            agent_missed = agent_everything[1:]
            assert [e.type for e in agent_missed] == ["status_change", "new_message", "status_change"], wire(
                agent_missed
            )

            last = seen[-1].id
            assert last is not None
            # The customer resumes on the chatbot process, the agent on the workbench one.
            async with (
                open_stream(http, bot + session_events(name), headers={"Last-Event-ID": last}) as (
                    resumed,
                    again,
                ),
                open_stream(http, desk + agent_events(agent), headers={"Last-Event-ID": transfer.id}) as (
                    agent_resumed,
                    agent_again,
                ),
            ):
                assert again.payload["recovered"] is True and again.id == last, again
                assert agent_again.payload["recovered"] is True, agent_again
                assert agent_again.id == transfer.id, agent_again
                replay = await resumed.take(len(missed))
                assert wire(replay) == wire(missed)
                agent_replay = await agent_resumed.take(len(agent_missed))
                assert wire(agent_replay) == wire(agent_missed)
                await resumed.assert_quiet(QUIET)  # nothing twice
                await agent_resumed.assert_quiet(0.1)
                await chat(http, name, "one more thing?", base=bot)
                live, watched = await resumed.take(2), await watch.take(2)
                assert wire(live) == wire(watched)
                check_strictly_increasing(last, [*replay, *live])
                check_strictly_increasing(transfer.id, agent_replay)


# --------------------------------------------------------------------------- 4. outage


async def request(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Reply:
    """Any answer, checked to be JSON (a 500 or an HTML error page fails here)."""
    reply = await send(http, method, url, body, timeout=10)
    assert reply.content_type == "application/json", (url, reply.status)
    return reply


def assert_unavailable(reply: Reply, what: str) -> None:
    assert reply.status == 503, (what, reply.status, reply.body)
    assert reply.body["error"]["code"] == "unavailable", (what, reply.body)
    assert reply.headers.get("Retry-After"), what


async def wait_healthy(http: aiohttp.ClientSession, base: str, timeout: float = RECOVERY) -> Any:
    return await poll(
        lambda: health(http, base),
        lambda body: body is not None and body["status"] == "ok" and body["broker"] == "redis-cluster",
        timeout,
        0.1,
    )


async def wait_degraded(http: aiohttp.ClientSession, base: str) -> Any:
    """/health during a shard outage: degraded, and still on the cluster (no memory mode)."""
    body = await poll(lambda: health(http, base), lambda b: b is not None and b["degraded"], SETTLE)
    assert body is not None and body["status"] == "degraded", body
    assert body["broker"] == "redis-cluster", body
    return body


def owner(admin: ClusterClient, ports: list[int], key: str) -> int:
    """The index (in ``ports``) of the primary that holds ``key``."""
    return ports.index(port_of(admin, key))


async def restore(redis_cluster: RedisCluster, victim: int) -> None:
    """Bring the session-scoped cluster back whatever happened to the test."""
    if not redis_cluster.is_running(victim):
        await asyncio.to_thread(redis_cluster.restart_node, victim)
    await asyncio.to_thread(redis_cluster.wait_ok)


@asynccontextmanager
async def open_hinted(http: aiohttp.ClientSession, url: str) -> AsyncIterator[Collector]:
    """A stream read in the background (a Collector), whose SSEStream also records the
    ``retry:`` hint the server sends when it ends the stream."""
    async with open_stream(http, url) as (stream, connected):
        collector = Collector(url, stream, connected)
        try:
            yield collector
        finally:
            await collector.close()


async def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` (bounded in time and count); whether it came to hold."""
    return (await wait.poll(check, timeout=timeout)).ok


def about(events: Iterable[SSEEvent], name: str) -> list[SSEEvent]:
    """The events (heartbeats and ``connected`` left out) that concern session ``name``."""
    return [
        e
        for e in events
        if e.type not in ("heartbeat", "connected") and e.payload.get("session_name") == name
    ]


async def test_a_session_on_a_dead_shard_is_refused_before_anything_is_written(
    server_process: StartServer,
    cluster_url: str,
    redis_cluster: RedisCluster,
    admin: ClusterClient,
) -> None:
    """Kill the primary that holds a session (its store keys and, same tag, its channel).

    Right after the kill, a session on another shard still works (checked at once: the cluster
    declares itself failed after node-timeout, ~2-4 s here, and then every shard refuses).
    For the session on the dead shard, chat, escalate, takeover, reads and its event stream
    answer 503 JSON with Retry-After, never 500; /health is degraded on ``redis-cluster``.

    "Nothing written": the restarted node comes back empty (the harness runs without
    persistence), so the session's own keys cannot be compared after the outage. What is
    checked is everything the refused requests could have written or published elsewhere:
    ``sessions:status_seq`` and the status sets on the live shards are as before the kill; a
    stream open on the session since before the kill sees no event of it (no local-only
    delivery), and an agent stream (broadcast, on a live shard) gets no transfer_request or
    status_change for it, not even after recovery (nothing waits in an outbox). After the
    node is back, the process is ok again and the shard serves new events."""
    ports = redis_cluster.ports
    # The victim must hold neither the workbench tag (the agent stream watches the broadcast
    # live) nor the keys an escalation writes before its commit (checked after the outage).
    keep = {
        owner(admin, ports, k)
        for k in (
            LAYOUT.clock_key((BROADCAST,)),
            "sessions:status_seq",
            "status:waiting_agent",
            "status:agent_active",
            "status:closed",
        )
    }
    victim = next((i for i in range(len(ports)) if i not in keep), None)
    assert victim is not None, f"every primary holds a key this test reads: {keep}"
    dead = ports[victim]
    doomed = find_name("doomed", lambda n: key_port(admin, n) == dead)
    assert channel_port(admin, session_channel(doomed)) == dead  # state and events together
    healthy = find_name("healthy", lambda n: key_port(admin, n) != dead)
    agent = "agent-w"
    process = server_process(
        "--redis-url", cluster_url, "--redis-timeout", "2", "--heartbeat", "1", env=REDIS_ON
    )
    base = process.url
    bot, desk = f"{base}/chatbot/api", f"{base}/workbench/api"
    witness = keep.pop()
    try:
        async with aiohttp.ClientSession() as http:
            for name in (doomed, healthy):
                await create(http, name, base=base)
            await chat(http, doomed, "hello", base=base)
            async with (
                open_hinted(http, base + session_events(doomed)) as doomed_view,
                open_stream(http, base + session_events(healthy)) as (healthy_stream, _),
                open_hinted(http, base + agent_events(agent)) as agent_view,
            ):
                status_seq = await admin.get("sessions:status_seq")
                assert status_seq is not None
                assert await status_sets_holding(admin, doomed) == ["bot_active"]

                redis_cluster.kill_node(victim)
                killed_at = time.monotonic()
                # At once, before the cluster marks itself failed: the other shards serve.
                await chat(http, healthy, "still there?", base=base)
                said, _reply = await healthy_stream.take(2)
                assert said.payload["message"]["content"] == "still there?", said
                healthy_done = time.monotonic() - killed_at
                state = redis_cluster.cluster_info(witness)["cluster_state"]
                assert state == "ok", f"cluster failed within {healthy_done:.2f}s of the kill"

                # The session on the dead shard: refused, reads and writes alike.
                refusals = {
                    "chat": request(
                        http, "POST", f"{bot}/chat", {"session_name": doomed, "content": "anyone?"}
                    ),
                    "escalate": request(
                        http,
                        "POST",
                        f"{bot}/manual/escalate",
                        {"session_name": doomed, "reason": "outage test"},
                    ),
                    "takeover": request(
                        http, "POST", f"{desk}/sessions/{doomed}/takeover", {"agent_id": agent}
                    ),
                    "read": request(http, "GET", f"{bot}/sessions/{doomed}"),
                    "messages": request(http, "GET", f"{bot}/sessions/{doomed}/messages"),
                    "stream": request(http, "GET", base + session_events(doomed)),
                }
                for what, reply in zip(refusals, await asyncio.gather(*refusals.values()), strict=True):
                    assert_unavailable(reply, f"{what} of a session on the dead shard")
                refused_by = time.monotonic() - killed_at
                # What a refused change could have written elsewhere, read at once (a live
                # shard refuses reads too once the cluster is failed).
                seq_after = await admin.get("sessions:status_seq")
                sets_after = [
                    s
                    for s in ("waiting_agent", "agent_active", "closed")
                    if await admin.zscore(f"status:{s}", doomed) is not None
                ]
                logger.info(
                    "healthy shard served %.2f s after the kill; 503s by %.2f s", healthy_done, refused_by
                )
                assert seq_after == status_seq, "a refused change took a queue number"
                assert sets_after == [], sets_after
                degraded = await wait_degraded(http, base)
                logger.info("/health during the outage: %s", degraded)

                await asyncio.to_thread(redis_cluster.restart_node, victim)
                back = await wait_healthy(http, base)
                assert back is not None and back["status"] == "ok", back
                assert back["degraded"] is False, back
                logger.info("process ok again %.2f s after the kill", time.monotonic() - killed_at)

                # The index on the shards that stayed up never heard of the refused changes.
                assert await admin.get("sessions:status_seq") == status_seq
                assert await status_sets_holding(admin, doomed) in ([], ["bot_active"])
                # Nothing was published for the session: not on its own stream (open since
                # before the kill; it may have been ended to resume, with a retry hint), not
                # on the broadcast (nothing waited in an outbox to come out after recovery).
                await asyncio.sleep(QUIET)
                assert about(doomed_view.events, doomed) == [], wire(doomed_view.events)
                if doomed_view.ended is not None:
                    assert isinstance(doomed_view.ended, EOFError), repr(doomed_view.ended)
                    assert isinstance(doomed_view.stream, SSEStream)
                    assert doomed_view.stream.retry_ms is not None, "ended without a retry hint"
                assert about(agent_view.events, doomed) == [], wire(agent_view.events)
                assert agent_view.ended is None, repr(agent_view.ended)

                # The restarted node came back without its data: the session is gone, or (on
                # a harness with persistence) exactly as it was.
                session = await request(http, "GET", f"{bot}/sessions/{doomed}")
                if session.status == 200:
                    assert session.body["status"] == "bot_active", session.body
                    messages = await request(http, "GET", f"{bot}/sessions/{doomed}/messages")
                    assert [m["content"] for m in messages.body["messages"]][:1] == ["hello"]
                    assert len(messages.body["messages"]) == 2, messages.body
                else:
                    assert session.status == 404, (session.status, session.body)

                # The shard serves again: a new session on it gets its events.
                reborn = find_name("reborn", lambda n: key_port(admin, n) == dead)
                await create(http, reborn, base=base)
                async with open_stream(http, base + session_events(reborn)) as (stream, _):
                    await chat(http, reborn, "back again", base=base)
                    said, answer = await stream.take(2, timeout=SETTLE)
                    assert said.payload["message"]["content"] == "back again", wire([said])
                    assert answer.payload["message"]["role"] == "bot", wire([answer])
                await chat(http, healthy, "and now?", base=base)
                assert [
                    e.payload["message"]["content"] for e in await healthy_stream.take(2, timeout=SETTLE)
                ][:1] == ["and now?"]
                ready = await poll(
                    lambda: request(http, "GET", f"{base}/health/ready"),
                    lambda r: r is not None and r.status == 200,
                    SETTLE,
                    0.2,
                )
                assert ready is not None and ready.status == 200, ready
    finally:
        await restore(redis_cluster, victim)
    assert "Traceback" not in process.log(), process.log()[-3000:]


async def test_an_outbox_entry_goes_out_once_however_often_it_is_published(
    cluster_url: str, admin: ClusterClient
) -> None:
    """The relayed publish refuses an entry no newer than its session's mark on the target
    slot (a committer and a relay may both publish one); a relay round publishes what a
    pending outbox holds, empties it, takes it off the pending index, and then finds nothing."""
    log = RedisEventLog(admin, LAYOUT)
    pipes = ClusterPipes(admin)
    publish = functools.partial(log.append_relayed, pipes)
    outboxes = SessionOutboxes(admin, pipes, publish, ttl_ms=60_000, grace=0.0)
    data = [json.dumps(event(n)) for n in range(3)]
    mark = outboxes.mark_key(BROADCAST, "s1")
    assert await publish(BROADCAST, data[0], mark, "100-1") is not None
    assert await publish(BROADCAST, data[0], mark, "100-1") is None  # again
    assert await publish(BROADCAST, data[0], mark, "99-7") is None  # older
    assert await publish(BROADCAST, data[1], mark, "100-2") is not None
    other = outboxes.mark_key(BROADCAST, "s2")
    assert await publish(BROADCAST, data[1], other, "100-1") is not None  # another session's
    assert await admin.xlen(LAYOUT.history_key(BROADCAST)) == 3

    # What a process killed after its script leaves: an entry, and the session noted pending.
    await admin.xadd(outboxes.outbox_key("s3"), {"c": agent_channel("a9"), "d": data[2]})
    await admin.zadd(outboxes.pending_keys("s3")[0], {"s3 dead": 1})
    assert await outboxes.relay_once() == 1
    relayed = cast(
        list[tuple[str, dict[str, str]]], await admin.xrange(LAYOUT.history_key(agent_channel("a9")))
    )
    assert [fields["d"] for _, fields in relayed] == [data[2]]
    assert await admin.xlen(outboxes.outbox_key("s3")) == 0
    assert await admin.zcard(outboxes.pending_keys("s3")[0]) == 0
    assert await outboxes.relay_once() == 0

    # What a change adds on a cluster goes through a pipe per primary.
    await outboxes.note_pending("s4", "s4 live")
    assert await admin.zscore(outboxes.pending_keys("s4")[0], "s4 live") is not None
    await pipes.close()


async def test_racing_changes_leave_no_pending_outbox_behind(
    make_backends: Callable[..., Awaitable[Backends]], admin: ClusterClient
) -> None:
    """Ten agents on two processes (backends) take over one waiting conversation at once: the
    scripts of all but one find the session changed and write nothing. One wins, its events go
    out, and no change is left noted as pending, not even those whose script wrote nothing:
    checked right after, before any relay would look (it takes notes older than 2 s)."""
    first, second = await make_backends(), await make_backends()
    name = "racing-notes"
    await first.store.create(name)
    await first.store.apply(name, "escalate")
    agents = [f"a{i}" for i in range(10)]

    async def take(backends: Backends, agent: str) -> Transition:
        taken = functools.partial(of_transition, action="takeover", source="agent_workbench", agent_id=agent)
        return await backends.store.apply(name, "takeover", agent, announce=taken)

    async with asyncio.timeout(10):
        results = await asyncio.gather(
            *(take(backends, agent) for agent, backends in zip(agents, itertools.cycle((first, second)))),
            return_exceptions=True,
        )
    winner = assert_one_winner(results, agents)
    pipes = ClusterPipes(admin)
    publish = functools.partial(RedisEventLog(admin, LAYOUT).append_relayed, pipes)
    outboxes = SessionOutboxes(admin, pipes, publish, ttl_ms=1)  # for its key names
    notes = [await admin.zcard(key) for key in outboxes.pending_keys(name)]
    assert sum(notes) == 0, f"changes left noted as pending: {notes}"
    assert await admin.xlen(outboxes.outbox_key(name)) == 0
    entries = cast(list[tuple[str, dict[str, str]]], await admin.xrange(LAYOUT.history_key(BROADCAST)))
    changes = [json.loads(fields["d"])["payload"] for _, fields in entries]
    assert [(c["session_name"], c["agent_id"]) for c in changes if c["status"] == "agent_active"] == [
        (name, winner)
    ]


async def test_a_pipe_whose_slot_moved_goes_through_the_cluster_client(
    cluster_url: str, redis_cluster: RedisCluster
) -> None:
    """The slot map a pipe is chosen by can be stale (a slot moved): the node answers MOVED and
    the command goes through the cluster client, which follows the redirect and learns the
    new map. For a command and for a script, each after its slot moved under the client."""
    settings = Settings(redis_url=cluster_url, insecure=True)
    client = cluster_clients(settings)[0]
    await client.initialize()
    pipes = ClusterPipes(client)
    key = "pipe-moved"
    slot = client.keyslot(key)
    nodes = {port: SyncRedis(host="127.0.0.1", port=port) for port in redis_cluster.ports}
    home = port_of(client, key)
    other = next(port for port in redis_cluster.ports if port != home)
    ids = {port: as_text(node.execute_command("CLUSTER", "MYID")) for port, node in nodes.items()}  # type: ignore[no-untyped-call]

    def move_slot(to: int) -> None:
        for node in nodes.values():
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to])  # type: ignore[no-untyped-call]

    try:
        assert await pipes.execute(key, "SET", key, "before")  # the pipe to its owner
        await pipes.execute(key, "DEL", key)
        move_slot(other)
        assert await pipes.execute(key, "SET", key, "moved")  # MOVED: the cluster client's
        assert nodes[other].get(key) == b"moved"
        await pipes.execute(key, "DEL", key)
        move_slot(home)
        script = PipeScript.of("return redis.call('SET', KEYS[1], ARGV[1])")
        assert await pipes.run_script(script, [key], ["back"]) in (b"OK", "OK", True)
        assert nodes[home].get(key) == b"back"
    finally:
        move_slot(home)
        nodes[home].delete(key)
        for node in nodes.values():
            node.close()
        await pipes.close()
        await client.aclose()


async def test_events_for_a_lost_workbench_shard_wait_and_arrive_once(
    server_process: StartServer,
    cluster_url: str,
    redis_cluster: RedisCluster,
    admin: ClusterClient,
) -> None:
    """Kill the primary of the workbench tag (agent channels and the broadcast) while the
    sessions' own shards stay up.

    A customer's chat in a session held by an agent is accepted (200) at once: it is stored,
    and its new_message reaches the customer's stream at once (the session's channel is on a
    live shard); the copy for the agent's channel waits in the broker's outbox. The agent's
    stream (an EventSource-like reader on ``/workbench/api/agents/{id}/events``, resuming
    with Last-Event-ID whenever it is ended) gets those messages after the node is restarted:
    all of them, in order, exactly once. /health says degraded, then ok, ``redis-cluster``
    throughout.

    An escalation is refused (503) in this harness, before anything is written: it takes a
    queue number from ``sessions:status_seq``, which hashes to the workbench shard here (a
    status change needs that one key, wherever it lives). Its session, on a live shard, is
    checked unchanged after the outage, and no transfer_request for it ever comes out; an
    escalation after recovery reaches the agent's stream once."""
    ports = redis_cluster.ports
    victim = owner(admin, ports, LAYOUT.clock_key((BROADCAST,)))
    dead = ports[victim]
    assert owner(admin, ports, "sessions:status_seq") == victim, (
        "the harness layout changed: sessions:status_seq is off the workbench shard, so an "
        "escalation should now be accepted during its outage; update this test"
    )
    held = find_name("held", lambda n: key_port(admin, n) != dead)
    asking = find_name("asking", lambda n: key_port(admin, n) != dead)
    agent = "agent-o"
    witness = owner(admin, ports, session_key(held))
    process = server_process(
        "--redis-url", cluster_url, "--redis-timeout", "2", "--heartbeat", "1", env=REDIS_ON
    )
    base = process.url
    bot = f"{base}/chatbot/api"
    contents = [f"while the desk is away {i}" for i in range(3)]
    reading: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as stream_http:
            for name in (held, asking):
                await create(http, name, base=base)
            await escalate(http, held, base=base)
            await act(http, held, "takeover", agent, base=base)
            reader = ReconnectingReader(stream_http, base + agent_events(agent), read_timeout=5.0)
            reading = asyncio.create_task(reader.run(), name="agent-reader")
            async with open_stream(http, base + session_events(held)) as (customer, _):
                assert await wait_until(lambda: bool(reader.connected), SETTLE), reader.endings

                redis_cluster.kill_node(victim)
                killed_at = time.monotonic()
                # At once: the session's shard is up, so the change is made and its session
                # channel event is out; the agent channel's copy waits for the dead shard.
                for content in contents:
                    reply = await request(
                        http, "POST", f"{bot}/chat", {"session_name": held, "content": content}
                    )
                    assert reply.status == 200, (reply.status, reply.body)
                    assert reply.body["reply"] is None, reply.body  # the agent holds it
                seen = await customer.take(len(contents), timeout=SETTLE)
                assert [e.payload["message"]["content"] for e in seen] == contents, wire(seen)
                accepted_in = time.monotonic() - killed_at
                state = redis_cluster.cluster_info(witness)["cluster_state"]
                assert state == "ok", f"cluster failed within {accepted_in:.2f}s of the kill"

                refused = await request(
                    http, "POST", f"{bot}/manual/escalate", {"session_name": asking, "reason": "outage test"}
                )
                assert_unavailable(refused, "escalation needing sessions:status_seq")
                logger.info(
                    "chats accepted %.2f s after the kill, escalation refused by %.2f s",
                    accepted_in,
                    time.monotonic() - killed_at,
                )
                await wait_degraded(http, base)
                # No shard to publish on, no local-only delivery: nothing reached the agent.
                assert about(reader.events, held) == [], wire(reader.events)

                await asyncio.to_thread(redis_cluster.restart_node, victim)
                back = await wait_healthy(http, base)
                assert back is not None and back["degraded"] is False, back
                logger.info("process ok again %.2f s after the kill", time.monotonic() - killed_at)

                # The outbox retries at most OUTBOX_RETRY[1] apart: the waiting events come out
                # within a couple of attempts of the shard serving again.
                await wait_until(
                    lambda: len(about(reader.events, held)) >= len(contents) or reading.done(),
                    2 * OUTBOX_RETRY[1] + SETTLE,
                )
                problems = [
                    line for line in process.log().splitlines() if "dropped an event that waited" in line
                ]
                if reading.done():
                    # EventSource gives up for good on anything but a 200 event stream.
                    problems.append(f"the agent's stream could not reconnect: {reading.exception()!r}")
                assert not problems, "\n".join(problems)
                assert len(about(reader.events, held)) == len(contents), wire(reader.events)
                logger.info(
                    "the agent had the waiting events %.2f s after the kill (connections: %s)",
                    time.monotonic() - killed_at,
                    reader.endings,
                )
                await asyncio.sleep(QUIET)  # room for a duplicate to show
                got = about(reader.events, held)
                assert [e.type for e in got] == ["new_message"] * len(contents), wire(got)
                assert [e.payload["message"]["content"] for e in got] == contents, wire(got)
                assert len({e.id for e in got}) == len(got), wire(got)
                first = reader.connected[0][1].id
                assert first is not None
                check_strictly_increasing(first, [e for e in reader.events if e.id])
                await customer.assert_quiet(QUIET)  # the session channel's copies, once

            # The refused escalation changed nothing: its session's shard never went away.
            session = await call(http, "GET", f"{bot}/sessions/{asking}")
            assert (session["status"], session["escalation_reason"]) == ("bot_active", None), session
            assert await status_sets_holding(admin, asking) == ["bot_active"]
            transcript = await call(http, "GET", f"{bot}/sessions/{held}/messages")
            assert [m["content"] for m in transcript["messages"]] == contents
            assert about(reader.events, asking) == [], wire(reader.events)
            # After recovery the broadcast is live: an escalation reaches the agent once.
            await escalate(http, asking, base=base)
            assert await wait_until(lambda: bool(about(reader.events, asking)), SETTLE)
            await asyncio.sleep(QUIET)
            [transfer] = about(reader.events, asking)
            assert transfer.type == "transfer_request", wire([transfer])
            body = await health(http, base)
            assert (body["status"], body["broker"]) == ("ok", "redis-cluster"), body
    finally:
        if reading is not None:
            reading.cancel()
            with suppress(asyncio.CancelledError):
                await reading
        await restore(redis_cluster, victim)
    assert "Traceback" not in process.log(), process.log()[-3000:]


async def test_typing_reaches_each_sessions_streams_on_every_node(
    make_backends: Callable[..., Awaitable[Backends]], admin: ClusterClient
) -> None:
    """An ephemeral event on a session whose slot is on each primary: it reaches the other
    process's streams (sharded PUBLISH on the owner, from a script routed by the channel's
    history key), with no id and nothing added to the history."""
    sender, receiver = await make_backends(), await make_backends()
    placed = sessions_per_node(admin, "typing")
    channels = [session_channel(names[0]) for names in placed.values()]
    async with AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(receiver.broker.subscribe(channel)) for channel in channels]
        for channel in channels:
            typing = envelope("typing", {"session_name": channel[12:], "who": "bot"}, "ai_chatbot")
            await sender.broker.signal(channel, typing)
        for channel, subscription in zip(channels, subs, strict=True):
            [received] = await take(subscription, 1)
            assert received.envelope["type"] == "typing" and received.channel == channel
            assert b"id:" not in received.frame
            assert (await receiver.broker.history([channel], "0-0")).events == []
