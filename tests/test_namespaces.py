"""``--namespace NAME``: deployments sharing one Redis keep apart (issue 12).

Two servers on one Redis with ``/0`` and ``/2`` received each other's live events: a DB number
separates keys, not pub/sub. A namespace prefixes every key and wire channel the product gives
Redis with ``NAME:``; the logical channel names (handlers, ``connected`` events) do not change.

What these tests prove, on real Redis (a redis-server, the suite's 3-master cluster) and real
``run.py`` processes, all on 127.0.0.1:

* layouts: every key and wire channel (the supervisor pattern included) carries the prefix,
  wire → logical gives the channel back, and the default namespace keeps the contract's names;
  on a cluster a namespaced wire channel still hashes to its history's, clock's and session's
  slot;
* brokers: three on one Redis (``a``, ``b``, default) with the same channels share no event,
  no subscriber count (PUBSUB NUMSUB), no history and no clock;
* processes ``a`` (by flag) and ``b`` (by environment) on one Redis, same DB, same session name
  and agent id: a whole conversation in one (chat, escalation → transfer_request on the agent
  stream, takeover, messages, the supervisor's pattern stream) reaches its own four streams and
  none of the other's over a quiet window; the stream health endpoint counts one process, not
  two; Last-Event-ID resumes replay exactly the namespace's own events; every key begins with
  ``a:`` or ``b:`` and is a contract name after it, every subscribed channel too, and there is
  one pattern subscription per process;
* a default process beside a namespaced one still uses the contract's unprefixed names, and
  neither hears the other (so the namespaced pattern is prefixed: unprefixed, it would hear
  the default process's sessions and not its own);
* the ACL rule docs/security.md gives a namespace (its keys and channels, its pattern named
  literally) is enough for a whole conversation and the readiness probe;
* a namespaced process on a cluster: a session's store key, history, clock and shard channel
  on one slot, every key under the prefix.
"""

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import NoPermissionError

from app.domain.store.redis_indexes import StoreKeys
from realtime.broker import Broker, Subscription
from realtime.channels import (
    BROADCAST,
    SESSION_PATTERN,
    SESSIONS_FEED,
    agent_channel,
    canary_channel,
    presence_channel,
    session_channel,
)
from realtime.cluster_broker import ClusterLayout
from realtime.layout import namespace_prefix
from realtime.redis_broker import KeyLayout, RedisBroker
from realtime.redis_replies import as_text
from tests.support.api import (
    WORKBENCH,
    act,
    agent_events,
    agent_say,
    call,
    chat,
    create,
    escalate,
    session_events,
)
from tests.support.broker import assert_quiet, event, take
from tests.support.checks import check_ids, wire
from tests.support.processes import REDIS_ON, ServerProcess, StartServer
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_names import SAFE_CHANNEL, SAFE_KEY, outside, redis_names
from tests.support.redis_server import RedisServer, client_of
from tests.support.sse import SSEEvent, SSEStream, open_stream

SESSION, AGENT = "s1", "alice"  # the same in every namespace: only the prefix keeps them apart
QUIET = 0.5  # the window in which nothing may cross
ACL_PASSWORD = "switchboard-test-acl-password"
SUPERVISOR = f"{WORKBENCH}/events"
# What one conversation (see ``converse``) puts on a session's streams, and on the agent's.
SESSION_TYPES = [
    "new_message",  # the customer's hello
    "new_message",  # the bot's answer
    "status_change",  # escalated: waiting_agent
    "agent_joined",
    "status_change",  # taken over: agent_active
    "new_message",  # the agent's message
    "new_message",  # the customer's answer
]
AGENT_TYPES = ["transfer_request", "status_change", "new_message"]
# The channels a process's streams (see ``watched``) hold, besides the supervisor's pattern.
HELD = {session_channel(SESSION), presence_channel(SESSION), agent_channel(AGENT), BROADCAST}


# --------------------------------------------------------------------------- layouts


def test_layouts_prefix_every_name_and_keep_slots() -> None:
    """Every key and wire channel under ``NAME:``, wire → logical gives the channel back; the
    default namespace keeps the contract's names; a cluster's names share the tag's slot."""
    channels = [
        session_channel(SESSION),
        presence_channel(SESSION),
        agent_channel(AGENT),
        BROADCAST,
        canary_channel("c1"),
    ]
    for namespace in ("", "team-a"):
        prefix = namespace_prefix(namespace)
        one = KeyLayout(namespace)
        assert one.shared_clock_key == one.clock_key(channels[:1]) == prefix + "events:clock"
        assert one.pattern_history_key(channels[0]) == prefix + "history:sse:session:*"
        assert one.wire(SESSION_PATTERN) == prefix + SESSION_PATTERN
        assert one.logical(one.wire(SESSION_PATTERN)) == SESSION_PATTERN
        cluster = ClusterLayout(namespace)
        for channel in channels:
            assert (one.wire(channel), one.history_key(channel)) == (
                prefix + channel,
                f"{prefix}history:{channel}",
            )
            assert one.logical(one.wire(channel)) == channel
        for channel in [*channels, SESSIONS_FEED]:
            names = [cluster.wire(channel), cluster.history_key(channel), cluster.clock_key([channel])]
            assert all(name.startswith(prefix) for name in names), names
            assert cluster.logical(cluster.wire(channel)) == channel
            assert len({key_slot(name.encode()) for name in names}) == 1, names
        session_names = [
            StoreKeys(namespace).session(SESSION),
            cluster.wire(session_channel(SESSION)),
            cluster.clock_key([presence_channel(SESSION)]),
        ]
        assert len({key_slot(name.encode()) for name in session_names}) == 1, session_names
    # The default namespace: the names of docs/api.md, unchanged.
    assert ClusterLayout().wire(session_channel(SESSION)) == "{s1}sse:session:s1"
    assert ClusterLayout().wire(SESSIONS_FEED) == SESSIONS_FEED
    # Namespaced, a channel that is its own tag spells it out: the prefix must not move its slot.
    assert ClusterLayout("a").wire(SESSIONS_FEED) == "a:{sse:sessions}sse:sessions"
    for unsafe in ("a*", "a:b", "{a}", "a b"):
        with pytest.raises(ValueError):
            namespace_prefix(unsafe)


# --------------------------------------------------------------------------- brokers


@asynccontextmanager
async def broker_in(redis_url: str, namespace: str) -> AsyncIterator[Broker]:
    client = Redis.from_url(redis_url)
    broker = RedisBroker(client, namespace=namespace)
    try:
        assert await broker.start(wait=5)
        yield broker
    finally:
        await broker.close()
        await client.aclose()


async def test_brokers_in_namespaces_share_nothing(redis_url: str) -> None:
    """Brokers ``a``, ``b`` and the default one on one Redis, each subscribed to the same
    session (with presence), the supervisor pattern and an agent's channels: each hears only
    its own events, counts only its own subscribers, and keeps its own history and clock."""
    namespaces = ("a", "b", "")
    session, presence = session_channel(SESSION), presence_channel(SESSION)
    async with AsyncExitStack() as stack:
        brokers = {ns: await stack.enter_async_context(broker_in(redis_url, ns)) for ns in namespaces}
        subscriptions: dict[str, list[Subscription]] = {}
        for ns, broker in brokers.items():
            subscriptions[ns] = [
                await stack.enter_async_context(broker.subscribe(session, presence=presence)),
                await stack.enter_async_context(broker.subscribe(SESSION_PATTERN)),
                await stack.enter_async_context(broker.subscribe(agent_channel(AGENT), BROADCAST)),
            ]
        published: dict[str, list[str]] = {}
        for ns, broker in brokers.items():
            published[ns] = [
                await broker.publish(session, event(1, SESSION)),
                await broker.publish(BROADCAST, event(2, SESSION)),
            ]
            own_session, own_pattern, own_agent = subscriptions[ns]
            assert [e.id for e in await take(own_session, 1)] == published[ns][:1]
            assert [e.id for e in await take(own_pattern, 1)] == published[ns][:1]
            assert [e.id for e in await take(own_agent, 1)] == published[ns][1:]
            others = [s for other in namespaces if other != ns for s in subscriptions[other]]
            await asyncio.gather(*(assert_quiet(s, QUIET) for s in others))
        for ns, broker in brokers.items():
            # One process each: a shared wire channel would count three.
            assert await broker.subscribed_processes(session) == 1, ns
            assert await broker.subscribed_processes(presence) == 1, ns
            assert await broker.last_event_id(session) == published[ns][0], ns
            history = await broker.history([session], after="0-0")
            assert [e.id for e in history.events] == published[ns][:1], ns

        # Exactly the contract's names, once per namespace: under its prefix, or bare.
        names = await redis_names(redis_url)
        histories = {"history:sse:session:s1", "history:sse:session:*", "history:sse:broadcast"}
        keys = {"events:clock", *histories, *(h + "#bytes" for h in histories)}
        assert set(names.keys) == {namespace_prefix(ns) + k for ns in namespaces for k in keys}
        assert set(names.channels) == {namespace_prefix(ns) + c for ns in namespaces for c in HELD}
        assert names.patterns == 3


# --------------------------------------------------------------------------- processes


@dataclass
class Deployment:
    """One process under one namespace, with a stream of each kind open on it: the customer's,
    an agent's view of the session, the agent's own (agent channel + broadcast) and the
    supervisor's (every session: the pattern)."""

    name: str
    url: str
    streams: dict[str, SSEStream]

    async def drain(self) -> dict[str, list[SSEEvent]]:
        """What each stream got, read until the streams stay quiet for QUIET seconds."""
        got = await asyncio.gather(*(stream.drain(QUIET) for stream in self.streams.values()))
        return dict(zip(self.streams, got, strict=True))


def stream_urls(url: str) -> dict[str, str]:
    return {
        "customer": url + session_events(SESSION),
        "watch": url + session_events(SESSION, "workbench"),
        "agent": url + agent_events(AGENT),
        "supervisor": url + SUPERVISOR,
    }


@asynccontextmanager
async def watched(
    http: aiohttp.ClientSession, name: str, process: ServerProcess
) -> AsyncIterator[Deployment]:
    """``process`` with session SESSION created and its four streams open (each has seen
    ``connected``)."""
    await create(http, SESSION, base=process.url)
    async with AsyncExitStack() as stack:
        streams = {}
        for kind, url in stream_urls(process.url).items():
            streams[kind], _ = await stack.enter_async_context(open_stream(http, url))
        yield Deployment(name, process.url, streams)


async def converse(http: aiohttp.ClientSession, deployment: Deployment) -> None:
    """A whole conversation up to the agent's answer, each message naming the deployment."""
    base, tag = deployment.url, deployment.name
    await chat(http, SESSION, f"hello from {tag}", base=base)
    await escalate(http, SESSION, base=base)
    await act(http, SESSION, "takeover", AGENT, base=base)
    await agent_say(http, SESSION, AGENT, f"agent in {tag}", base=base)
    await chat(http, SESSION, f"thanks from {tag}", base=base)


async def converse_alone(
    http: aiohttp.ClientSession, speaker: Deployment, listeners: Iterable[Deployment]
) -> dict[str, list[SSEEvent]]:
    """``converse`` in ``speaker``: every one of its streams gets the conversation, and no
    stream of the ``listeners`` gets anything over the quiet window. What each stream got."""
    await converse(http, speaker)
    got = await speaker.drain()
    for kind in ("customer", "watch", "supervisor"):
        assert [e.type for e in got[kind]] == SESSION_TYPES, (speaker.name, kind, got[kind])
    assert [e.type for e in got["agent"]] == AGENT_TYPES, (speaker.name, got["agent"])
    [transfer] = [e for e in got["agent"] if e.type == "transfer_request"]
    assert transfer.payload["session_name"] == SESSION, transfer
    for kind, events in got.items():
        check_ids(events, strictly=kind != "agent")  # two channels: ids in order, not strictly
        messages = [e.payload["message"] for e in events if e.type == "new_message"]
        said = [m["content"] for m in messages if m["role"] != "bot"]
        assert said and all(c.endswith(speaker.name) for c in said), (speaker.name, kind, said)
    crossed = {
        f"{other.name}/{kind}": events
        for other in listeners
        for kind, events in (await other.drain()).items()
    }
    assert {where: wire(events) for where, events in crossed.items() if events} == {}, speaker.name
    return got


async def resumes_its_own(
    http: aiohttp.ClientSession, deployment: Deployment, got: list[SSEEvent], url: str
) -> None:
    """A stream resumed from the first of ``got`` replays exactly the rest, then is quiet."""
    first = got[0].id
    assert first is not None
    async with open_stream(http, url, headers={"Last-Event-ID": first}) as (resumed, connected):
        assert connected.payload["recovered"] is True, (deployment.name, connected)
        assert wire(await resumed.take(len(got) - 1)) == wire(got[1:]), deployment.name
        await resumed.assert_quiet(QUIET)


async def test_two_namespaces_on_one_redis_share_nothing(server_process: StartServer, redis_url: str) -> None:
    """``a`` (by flag) and ``b`` (by environment) on one Redis, same DB, same session name and
    agent id: each conversation reaches its own four streams and none of the other's; counts,
    resumes and readiness stay within the namespace; every key and channel is under a prefix."""
    a = server_process("--redis-url", redis_url, "--namespace", "a", env=REDIS_ON)
    b = server_process("--redis-url", redis_url, env={**REDIS_ON, "SWITCHBOARD_NAMESPACE": "b"})
    async with (
        aiohttp.ClientSession() as http,
        watched(http, "a", a) as in_a,
        watched(http, "b", b) as in_b,
    ):
        got = {"a": await converse_alone(http, in_a, [in_b]), "b": await converse_alone(http, in_b, [in_a])}
        for deployment in (in_a, in_b):
            mine = got[deployment.name]
            health = await call(http, "GET", f"{deployment.url}{WORKBENCH}/sessions/{SESSION}/stream")
            # Two of its streams on the session, in one process; the other's are not counted.
            assert health["subscribed_processes"] == 1, (deployment.name, health)
            assert health["customer_connected"] is True, (deployment.name, health)
            assert health["last_event"]["id"] == mine["watch"][-1].id, (deployment.name, health)
            ready = await call(http, "GET", f"{deployment.url}/health/ready")
            assert ready["ready"] is True, (deployment.name, ready)
            urls = stream_urls(deployment.url)
            await resumes_its_own(http, deployment, mine["customer"], urls["customer"])
            await resumes_its_own(http, deployment, mine["supervisor"], urls["supervisor"])

        names = await redis_names(redis_url)
        keys = {ns: [k for k in names.keys if k.startswith(f"{ns}:")] for ns in ("a", "b")}
        assert [k for k in names.keys if k[:2] not in ("a:", "b:")] == [], names.keys
        channels = {ns: [c for c in names.channels if c.startswith(f"{ns}:")] for ns in ("a", "b")}
        assert [c for c in names.channels if c[:2] not in ("a:", "b:")] == [], names.channels
        for ns in ("a", "b"):
            assert outside(keys[ns], SAFE_KEY, ns) == [], keys[ns]
            assert outside(channels[ns], SAFE_CHANNEL, ns) == [], channels[ns]
            assert f"{ns}:session:{{{SESSION}}}" in keys[ns] and f"{ns}:events:clock" in keys[ns]
            assert {f"{ns}:history:sse:session:*", f"{ns}:history:sse:broadcast"} <= set(keys[ns])
        # The same names under either prefix, but for each process's canary.
        same = [{k[2:] for k in keys[ns] if ":sse:canary:" not in k} for ns in ("a", "b")]
        assert same[0] == same[1], same
        assert {c[2:] for c in channels["a"]} == {c[2:] for c in channels["b"]} == HELD
        assert names.patterns == 2  # one supervisor pattern per process, each under its prefix


async def test_the_default_namespace_keeps_the_contract_names(
    server_process: StartServer, redis_url: str
) -> None:
    """A process without a namespace beside one with ``a``, same names: the default one's keys
    and channels are the contract's unprefixed names, and neither hears the other."""
    plain = server_process("--redis-url", redis_url, env={**REDIS_ON, "SWITCHBOARD_NAMESPACE": ""})
    a = server_process("--redis-url", redis_url, "--namespace", "a", env=REDIS_ON)
    async with (
        aiohttp.ClientSession() as http,
        watched(http, "default", plain) as in_plain,
        watched(http, "a", a) as in_a,
    ):
        await converse_alone(http, in_a, [in_plain])
        before = await redis_names(redis_url)
        # So far only ``a`` spoke: outside its prefix are only the keys of the default
        # process's new session and its streams' clock (none of a transcript or a history).
        created = [
            "customers_seen:{sse:workbench}",
            "events:clock",
            "session:{s1}",
            "sessions:status_seq",
            "status:bot_active",
        ]
        assert [k for k in before.keys if not k.startswith("a:")] == created, before.keys
        await converse_alone(http, in_plain, [in_a])
        names = await redis_names(redis_url)
        plain_keys = [k for k in names.keys if not k.startswith("a:")]
        assert outside(plain_keys, SAFE_KEY) == [], plain_keys
        assert {"session:{s1}", "events:clock", "history:sse:session:*", "history:sse:broadcast"} <= set(
            plain_keys
        )
        assert {c for c in names.channels if not c.startswith("a:")} == HELD
        assert names.patterns == 2


async def test_an_acl_user_confined_to_its_namespace_is_enough(
    server_process: StartServer, redis_server: RedisServer
) -> None:
    """The ACL rule docs/security.md gives (keys and channels ``a:*``, the supervisor pattern
    named literally: Redis lets PSUBSCRIBE through only for a pattern the user is granted as
    written) runs a whole conversation and the readiness canary, and refuses ``b:``."""
    admin = client_of(redis_server.port)
    try:
        admin.acl_setuser(
            "switchboard-a",
            enabled=True,
            passwords=[f"+{ACL_PASSWORD}"],
            keys=["a:*"],
            channels=["a:*", "a:sse:session:*"],
            commands=["+@all", "-@dangerous"],
        )
    finally:
        admin.close()
    url = f"redis://switchboard-a:{ACL_PASSWORD}@127.0.0.1:{redis_server.port}/0"
    a = server_process("--redis-url", url, "--namespace", "a", env=REDIS_ON)
    async with aiohttp.ClientSession() as http, watched(http, "a", a) as in_a:
        await converse_alone(http, in_a, [])
        assert (await call(http, "GET", f"{a.url}/health/ready"))["ready"] is True
        assert (await call(http, "GET", f"{a.url}/health"))["degraded"] is False
    confined = client_of(redis_server.port, username="switchboard-a", password=ACL_PASSWORD)
    try:
        with pytest.raises(NoPermissionError):
            confined.set("b:session:{s1}", "{}")
    finally:
        confined.close()


# --------------------------------------------------------------------------- cluster


async def test_a_namespace_on_a_cluster_keeps_a_session_on_one_slot(
    server_process: StartServer, redis_cluster: RedisCluster, cluster_url: str
) -> None:
    """A namespaced process on the cluster: the session's store key, history, clock and shard
    channel hash to one slot and live on one primary; every key and shard channel is ``a:``."""
    process = server_process("--redis-url", cluster_url, "--namespace", "a", env=REDIS_ON)
    channel = session_channel(SESSION)
    names = {
        "session": f"a:session:{{{SESSION}}}",
        "history": f"a:history:{{{SESSION}}}{channel}",
        "clock": f"a:clock:{{{SESSION}}}",
        "wire": f"a:{{{SESSION}}}{channel}",
    }
    slot = key_slot(SESSION.encode())
    assert {key_slot(name.encode()) for name in names.values()} == {slot}, names
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        nodes = {}  # a plain client per primary, by port: what each node itself holds
        for port in redis_cluster.ports:
            nodes[port] = Redis(host="127.0.0.1", port=port, decode_responses=True)
            stack.push_async_callback(nodes[port].aclose)
        await create(http, SESSION, base=process.url)
        url = process.url + session_events(SESSION)
        stream, connected = await stack.enter_async_context(open_stream(http, url))
        assert connected.payload["channels"] == [channel], connected  # logical names unchanged
        await chat(http, SESSION, "hello", base=process.url)
        said = await stream.take(2)
        keys = {port: {as_text(key) for key in await node.keys("*")} for port, node in nodes.items()}
        every_key = sorted(key for held in keys.values() for key in held)
        assert [key for key in every_key if not key.startswith("a:")] == [], every_key
        shard_channels = [
            as_text(c) for node in nodes.values() for c in await command(node, "PUBSUB", "SHARDCHANNELS")
        ]
        assert shard_channels and [c for c in shard_channels if not c.startswith("a:")] == [], shard_channels
        [owner] = [nodes[port] for port, held in keys.items() if names["session"] in held]
        assert {names["history"], names["clock"]} <= set(await owner.keys("*"))
        assert int(await command(owner, "CLUSTER", "KEYSLOT", names["wire"])) == slot
        assert (await command(owner, "PUBSUB", "SHARDNUMSUB", names["wire"]))[1] == 1
        assert await owner.xlen(names["history"]) == 2
        assert await owner.get(names["clock"]) == said[-1].id


async def command(node: Redis, *args: str) -> Any:
    """A raw command to one node, as the server sees it."""
    return await node.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
