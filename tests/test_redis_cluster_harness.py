"""The local Redis Cluster harness, and the redis-py (8.2) asyncio cluster API a sharded broker
and a cluster store rely on, checked against real nodes: hash-tagged keys and scripts, WATCH/MULTI
on one slot, sharded pub/sub across nodes, and what a node crash does to subscribers."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, ClusterPubSub
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    CrossSlotTransactionError,
    RedisClusterException,
    WatchError,
)

from tests.support.redis_cluster import RedisCluster

READ_TIMEOUT = 5.0  # bound on waiting for pub/sub messages
POLL = 0.05  # per-node wait of one get_sharded_message call
MAX_SEARCH = 10_000  # names tried when looking for channels/keys on given nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as started:
        yield started


async def connect(cluster: RedisCluster, **kwargs: Any) -> ClusterClient:
    client = ClusterClient(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in cluster.ports],
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        **kwargs,
    )
    await client.initialize()  # pubsub()/keyslot routing need the slot map loaded
    return client


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    connected = await connect(cluster)
    yield connected
    await connected.aclose()


def tag() -> str:
    """A fresh hash tag per test: the cluster is shared by the whole module."""
    return f"sse:session:{uuid.uuid4().hex[:12]}"


def node_of(client: ClusterClient, key: str) -> ClusterNode:
    """The primary serving ``key``'s slot (the client has loaded the slot map)."""
    node = client.get_node_from_key(key)
    assert node is not None, key
    return node


def channels_per_node(client: ClusterClient, prefix: str) -> dict[str, str]:
    """One channel name per primary, found by hashing candidate names (bounded)."""
    wanted = {node.name for node in client.get_primaries()}
    found: dict[str, str] = {}
    for i in range(MAX_SEARCH):
        channel = f"{prefix}:{i}"
        found.setdefault(node_of(client, channel).name, channel)
        if set(found) == wanted:
            return found
    raise AssertionError(f"no channel found for every node: {found}")


async def read(
    pubsub: ClusterPubSub, count: int, types: tuple[str, ...] = ("smessage",), timeout: float = READ_TIMEOUT
) -> list[dict[str, Any]]:
    """Up to ``count`` messages of ``types``, polling every shard, bounded in time and calls."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL) + 1):
        if len(messages) >= count or time.monotonic() > deadline:
            break
        message = await pubsub.get_sharded_message(timeout=POLL)
        if message is not None and message["type"] in types:
            messages.append(message)
    return messages


def node_index(cluster: RedisCluster, node_name: str) -> int:
    return cluster.ports.index(int(node_name.rsplit(":", 1)[1]))


def test_cluster_is_up_on_loopback(cluster: RedisCluster) -> None:
    assert len(set(cluster.ports)) == 3
    assert cluster.urls == [f"redis://127.0.0.1:{port}/0" for port in cluster.ports]
    assert cluster.url == cluster.urls[0]
    assert cluster.cluster_url == "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    assert cluster.start_seconds is not None and cluster.start_seconds < 15
    for i in range(3):
        info = cluster.cluster_info(i)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == "16384"


async def test_client_from_one_url_discovers_every_primary(cluster: RedisCluster) -> None:
    client = ClusterClient.from_url(cluster.url, decode_responses=True)
    try:
        await client.initialize()
        assert sorted(node.port for node in client.get_primaries()) == sorted(cluster.ports)
    finally:
        await client.aclose()


async def test_hash_tagged_keys_share_a_slot_and_a_script_touches_both(
    client: ClusterClient,
) -> None:
    session = tag()
    history, clock = f"history:{{{session}}}", f"clock:{{{session}}}"
    assert client.keyslot(history) == client.keyslot(clock)
    append = client.register_script(
        "local seq = redis.call('INCR', KEYS[2])\n"
        "redis.call('RPUSH', KEYS[1], seq .. ':' .. ARGV[1])\n"
        "return seq"
    )
    assert await append(keys=[history, clock], args=["a"]) == 1  # NOSCRIPT, SCRIPT LOAD, EVALSHA
    assert await append(keys=[history, clock], args=["b"]) == 2  # EVALSHA
    assert await client.lrange(history, 0, -1) == ["1:a", "2:b"]
    # Keys of two slots are refused by the client itself, before any server sees them.
    with pytest.raises(RedisClusterException, match="same key slot"):
        await append(keys=[history, f"clock:{{{tag()}}}"], args=["c"])


async def test_watch_multi_transaction_on_one_slot(cluster: RedisCluster, client: ClusterClient) -> None:
    session = tag()
    history, clock = f"history:{{{session}}}", f"clock:{{{session}}}"
    await client.set(clock, 5)
    # `async with` matters: it (re)initializes the client on this event loop (see report).
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(history, clock)  # type: ignore[no-untyped-call]  # redis-py leaves ClusterPipeline.watch unannotated
        value = await pipe.get(clock)  # after WATCH, commands run immediately
        assert value is not None
        seq = int(value)
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves ClusterPipeline.multi unannotated
        pipe.set(clock, seq + 1)  # after MULTI they are queued (not awaited)
        pipe.rpush(history, f"{seq + 1}:x")
        assert await pipe.execute() == [True, 1]
    assert await client.get(clock) == "6"

    other = await connect(cluster)
    try:
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch(clock)  # type: ignore[no-untyped-call]  # redis-py leaves ClusterPipeline.watch unannotated
            await other.set(clock, 100)  # a concurrent writer
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves ClusterPipeline.multi unannotated
            pipe.set(clock, 7)
            with pytest.raises(WatchError):
                await pipe.execute()
    finally:
        await other.aclose()
    assert await client.get(clock) == "100"

    async with client.pipeline(transaction=True) as pipe:
        pipe.set(clock, 1)
        pipe.set(f"clock:{{{tag()}}}", 1)
        with pytest.raises(CrossSlotTransactionError):
            await pipe.execute()


async def test_sharded_pubsub_across_nodes(client: ClusterClient) -> None:
    channels = channels_per_node(client, f"sse:{tag()}")
    assert len(channels) == 3
    pubsub = client.pubsub()
    try:
        assert pubsub.node_pubsub_mapping == {}  # nothing connected before the first ssubscribe
        await pubsub.ssubscribe(*channels.values())
        assert set(pubsub.node_pubsub_mapping) == set(channels)  # one PubSub (connection) per node
        confirmations = await read(pubsub, 3, types=("ssubscribe",))
        assert {m["channel"] for m in confirmations} == set(channels.values())

        for name, channel in channels.items():
            assert await client.spublish(channel, f"to {name}") == 1
        received = await read(pubsub, 3)
        assert {(m["channel"], m["data"]) for m in received} == {
            (channel, f"to {name}") for name, channel in channels.items()
        }

        first = next(iter(channels))
        node = client.get_node(node_name=first)
        assert node is not None
        assert await client.spublish(channels[first], "targeted") == 1
        message = await pubsub.get_sharded_message(timeout=READ_TIMEOUT, target_node=node)
        assert message is not None and message["data"] == "targeted"

        await pubsub.sunsubscribe(*channels.values())
        # Bookkeeping (and closing a node's PubSub) happens only when the confirmation is read.
        assert set(pubsub.shard_channels) == set(channels.values())
        confirmations = await read(pubsub, 3, types=("sunsubscribe",))
        assert {m["channel"] for m in confirmations} == set(channels.values())
        assert pubsub.shard_channels == {} and pubsub.node_pubsub_mapping == {}
        for channel in channels.values():
            assert await client.spublish(channel, "nobody") == 0
    finally:
        await pubsub.aclose()


async def test_get_sharded_message_splits_its_timeout_across_shards(
    client: ClusterClient,
) -> None:
    """redis-py 8.2: one call waits about ``timeout`` in all (8.1 waited it on each shard in
    turn). The broker does not read through ClusterPubSub either way: one reader per primary
    never makes a shard's message wait behind another shard's poll."""
    channels = channels_per_node(client, f"sse:{tag()}")
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(*channels.values())
        assert len(await read(pubsub, 3, types=("ssubscribe",))) == 3
        started = time.monotonic()
        assert await pubsub.get_sharded_message(timeout=0.3) is None
        elapsed = time.monotonic() - started
        assert 0.25 < elapsed < 0.9, elapsed  # ~0.3 s in all, not 3 x 0.3 s
        started = time.monotonic()
        assert await pubsub.get_sharded_message(timeout=0) is None
        assert time.monotonic() - started < 0.2
    finally:
        await pubsub.aclose()


async def test_node_crash_is_not_raised_while_other_shards_answer_then_resubscribes(
    cluster: RedisCluster,
    client: ClusterClient,
) -> None:
    """redis-py 8.2: a failed poll puts that shard in a cool-off and the healthy shards keep
    delivering; ConnectionError surfaces only when no shard answers (8.1 raised it from the
    first poll of the dead node). The broker's per-primary readers see the crash themselves."""
    channels = channels_per_node(client, f"sse:{tag()}")
    victim_name = next(iter(channels))
    victim = node_index(cluster, victim_name)
    healthy_name = next(name for name in channels if name != victim_name)
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(*channels.values())
        assert len(await read(pubsub, 3, types=("ssubscribe",))) == 3
        cluster.kill_node(victim)
        for _ in range(10):  # each pass reaches the dead node; none raises
            await pubsub.get_sharded_message(timeout=POLL)
        assert await client.spublish(channels[healthy_name], "alive") == 1
        assert [m["data"] for m in await read(pubsub, 1)] == ["alive"]
        with pytest.raises(ConnectionError):
            await client.spublish(channels[victim_name], "lost")

        await asyncio.to_thread(cluster.restart_node, victim)
        # No call from us: a read after the cool-off reconnects and replays SSUBSCRIBE.
        again = await read(pubsub, 1, types=("ssubscribe",))
        assert [m["channel"] for m in again] == [channels[victim_name]]
        assert await client.spublish(channels[victim_name], "back") == 1
        assert [m["data"] for m in await read(pubsub, 1)] == ["back"]
    finally:
        await pubsub.aclose()
        if not cluster.is_running(victim):
            await asyncio.to_thread(cluster.restart_node, victim)


async def test_cluster_down_error_refreshes_in_place_and_keeps_subscriptions(
    cluster: RedisCluster,
) -> None:
    """redis-py 8.2: a CLUSTERDOWN (or slot-not-covered) reply refreshes the slot map in place;
    the client's connections, pub/sub ones included, stay open (8.1 closed every connection of
    the client). The broker gives each primary's subscriber a client of its own all the same,
    so nothing the store's client meets can touch a stream."""
    shared = await connect(cluster, retry=Retry(NoBackoff(), 1))
    dedicated = await connect(cluster)
    publisher = await connect(cluster)
    pubsubs: list[ClusterPubSub] = []
    victim = 1
    try:
        healthy = next(i for i in range(3) if i != victim)
        key = next(
            k
            for k in (f"{tag()}:{n}" for n in range(MAX_SEARCH))
            if node_of(shared, k).port == cluster.ports[healthy]
        )
        channel = f"{{{key}}}:events"
        for owner in (shared, dedicated):
            pubsub = owner.pubsub()
            pubsubs.append(pubsub)
            await pubsub.ssubscribe(channel)
            assert len(await read(pubsub, 1, types=("ssubscribe",))) == 1
        assert await publisher.spublish(channel, "before") == 2
        for pubsub in pubsubs:
            assert [m["data"] for m in await read(pubsub, 1)] == ["before"]

        cluster.kill_node(victim)
        deadline = time.monotonic() + 15
        for _ in range(300):  # peers need ~2 node timeouts to agree the node failed
            if time.monotonic() > deadline:
                break
            if cluster.cluster_info(healthy)["cluster_state"] == "fail":
                break
            await asyncio.sleep(0.05)
        assert cluster.cluster_info(healthy)["cluster_state"] == "fail"
        with pytest.raises(ClusterDownError):  # a key on a healthy node is refused too
            await shared.get(key)
        # Sharded pub/sub still works on healthy nodes while the cluster is down, and the
        # shared client's subscriber kept its socket through that error.
        assert await publisher.spublish(channel, "during") == 2
        for pubsub in pubsubs:
            assert [m["data"] for m in await read(pubsub, 1)] == ["during"]
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        for owner in (shared, dedicated, publisher):
            await owner.aclose()
        if not cluster.is_running(victim):
            await asyncio.to_thread(cluster.restart_node, victim)
