"""The pub/sub reader's socket (realtime/pubsub_wire.py) against a real redis-server: replies
handed over in order and as RESP has them, however many one read holds; AUTH, SELECT and the
client's name taken from the client; a lost connection fails the pump and the next connect
makes a new one; an error reply is raised once and the connection goes on. What it cannot serve
(TLS, a unix socket, RESP3) stays on redis-py's PubSub; a broker on either reads events, drops
garbage, keeps a quiet connection with PINGs and drops a hung one, then comes back."""

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.pubsub_wire import HiredisPubSub, RedisPyPubSub, pubsub_wire
from realtime.redis_broker import RedisBroker
from tests.support.broker import event, take
from tests.support.redis_server import RedisServer
from tests.support.wait import until

MESSAGES = 5000
SETTLE = 5.0
LIVENESS = 0.2  # seconds: a hung Redis is dropped after three of them


class Replies:
    """What a wire hands over, and how often it connected."""

    def __init__(self) -> None:
        self.replies: list[list[Any]] = []
        self.connects = 0

    def on_reply(self, reply: list[Any]) -> None:
        self.replies.append(reply)

    def on_connect(self) -> None:
        self.connects += 1

    async def wait_for(self, count: int) -> list[list[Any]]:
        await until(lambda: len(self.replies), lambda n: n >= count, timeout=SETTLE, what=f"{count} replies")
        return self.replies


def wire_of(client: Redis, replies: Replies) -> HiredisPubSub:
    wire = HiredisPubSub.for_client(client, replies.on_reply, replies.on_connect)
    assert wire is not None
    return wire


@pytest.fixture
def own_redis() -> Iterator[tuple[RedisServer, str]]:
    """A redis-server of the test's own, listening on a unix socket too (a short path: the
    socket's name has a length limit that pytest's directories can pass)."""
    with tempfile.TemporaryDirectory(prefix="sb-") as short:
        socket = f"{short}/redis.sock"
        server = RedisServer(Path(short) / "redis", extra=["--unixsocket", socket, "--unixsocketperm", "700"])
        server.start()
        try:
            yield server, socket
        finally:
            server.stop()


async def test_replies_come_in_order_as_resp_has_them(redis_url: str, redis: Redis) -> None:
    replies = Replies()
    client = Redis.from_url(redis_url)
    wire = wire_of(client, replies)
    try:
        await wire.connect()
        await wire.connect()  # connected already: nothing to do
        assert replies.connects == 1
        await wire.send("SUBSCRIBE", "wire:a", "wire:b")
        await wire.send("PSUBSCRIBE", "wire:p*")
        assert await replies.wait_for(3) == [
            [b"subscribe", b"wire:a", 1],
            [b"subscribe", b"wire:b", 2],
            [b"psubscribe", b"wire:p*", 3],
        ]
        pipe = redis.pipeline(transaction=False)
        for i in range(MESSAGES):
            pipe.publish("wire:a" if i % 2 else "wire:pq", f"m{i}")
        await pipe.execute()
        received = (await replies.wait_for(3 + MESSAGES))[3:]
        assert received == [
            [b"message", b"wire:a", f"m{i}".encode()]
            if i % 2
            else [b"pmessage", b"wire:p*", b"wire:pq", f"m{i}".encode()]
            for i in range(MESSAGES)
        ]
        await wire.ping()
        assert (await replies.wait_for(4 + MESSAGES))[-1] == [b"pong", b"switchboard"]
        await wire.send("UNSUBSCRIBE", "wire:a")
        assert (await replies.wait_for(5 + MESSAGES))[-1] == [b"unsubscribe", b"wire:a", 2]
    finally:
        await wire.close()
        await client.aclose()


async def test_an_error_reply_is_raised_once_and_the_connection_goes_on(redis_url: str, redis: Redis) -> None:
    replies = Replies()
    client = Redis.from_url(redis_url)
    wire = wire_of(client, replies)
    try:
        await wire.connect()
        await wire.send("SUBSCRIBE")  # no channel: an error reply
        with pytest.raises(ResponseError):
            await wire.pump(SETTLE)
        await wire.send("SUBSCRIBE", "wire:after")
        await wire.pump(0.01)
        assert await replies.wait_for(1) == [[b"subscribe", b"wire:after", 1]]
        assert replies.connects == 1
    finally:
        await wire.close()
        await client.aclose()


async def test_a_killed_connection_fails_the_pump_and_connect_makes_a_new_one(
    redis_url: str, redis: Redis
) -> None:
    replies = Replies()
    client = Redis.from_url(redis_url)
    wire = wire_of(client, replies)
    try:
        await wire.connect()
        await wire.send("SUBSCRIBE", "wire:kill")
        await replies.wait_for(1)
        assert await redis.client_kill_filter(_type="pubsub") == 1
        with pytest.raises(RedisConnectionError):
            await wire.pump(SETTLE)
        with pytest.raises(RedisConnectionError):
            await wire.send("SUBSCRIBE", "wire:kill")
        await wire.connect()
        assert replies.connects == 2
        await wire.send("SUBSCRIBE", "wire:kill")
        await replies.wait_for(2)
        assert await redis.publish("wire:kill", "back") == 1
        assert (await replies.wait_for(3))[-1] == [b"message", b"wire:kill", b"back"]
    finally:
        await wire.close()
        await client.aclose()


async def test_auth_select_and_name_come_from_the_client(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    open_admin = Redis.from_url(server.url)
    await open_admin.config_set("requirepass", "s3cret-pass")  # a server of this test's own
    await open_admin.aclose()
    url = f"redis://:s3cret-pass@127.0.0.1:{server.port}/3"
    admin = Redis.from_url(url, decode_responses=True)
    client = Redis.from_url(url, client_name="switchboard-test-pubsub")
    wrong = Redis.from_url(url.replace("s3cret-pass", "wrong-pass"))
    replies = Replies()
    wire = wire_of(client, replies)
    try:
        await wire.connect()
        [entry] = [c for c in await admin.client_list() if c.get("name") == "switchboard-test-pubsub"]
        assert entry["db"] == "3"
        await wire.send("SUBSCRIBE", "wire:auth")
        await replies.wait_for(1)
        assert await admin.publish("wire:auth", "hello") == 1
        assert (await replies.wait_for(2))[-1] == [b"message", b"wire:auth", b"hello"]
        with pytest.raises(AuthenticationError):
            await wire_of(wrong, Replies()).connect()
    finally:
        await wire.close()
        for redis in (admin, client, wrong):
            await redis.aclose()
        server.stop()


@pytest.mark.parametrize(
    "client",
    [
        pytest.param(lambda: Redis.from_url("rediss://127.0.0.1:6379/0"), id="tls"),
        pytest.param(lambda: Redis(unix_socket_path="/tmp/redis.sock"), id="unix-socket"),
        pytest.param(lambda: Redis.from_url("redis://127.0.0.1:6379/0", protocol=3), id="resp3"),
    ],
)
def test_what_the_wire_cannot_serve_stays_with_redis_py(client: Any) -> None:
    redis = client()
    replies = Replies()
    assert HiredisPubSub.for_client(redis, replies.on_reply, replies.on_connect) is None
    assert isinstance(pubsub_wire(redis, replies.on_reply, replies.on_connect), RedisPyPubSub)


def broker_client(server: RedisServer, socket: str, path: str) -> Redis:
    """A client over TCP (our own wire) or over the unix socket (redis-py's PubSub)."""
    client = Redis(unix_socket_path=socket) if path == "redis-py" else Redis.from_url(server.url)
    wire = pubsub_wire(client, Replies().on_reply, Replies().on_connect)
    assert isinstance(wire, RedisPyPubSub if path == "redis-py" else HiredisPubSub)
    return client


@pytest.mark.parametrize("path", ["hiredis", "redis-py"])
async def test_a_broker_reads_events_and_drops_garbage_on_either_wire(
    own_redis: tuple[RedisServer, str], path: str
) -> None:
    server, socket = own_redis
    client = broker_client(server, socket, path)
    broker = RedisBroker(client)
    try:
        assert await broker.start(wait=SETTLE)
        async with (
            broker.subscribe("sse:session:w1") as subscription,
            broker.subscribe("sse:session:*") as pattern,
        ):
            assert await client.publish("sse:session:w1", b"1-0 \xff not utf-8") == 2
            published = [await broker.publish("sse:session:w1", event(n)) for n in range(3)]
            assert [e.id for e in await take(subscription, 3)] == published
            assert [e.id for e in await take(pattern, 3)] == published
            assert broker.stats.malformed == 2  # the channel's message and the pattern's
    finally:
        await broker.close()
        await client.aclose()


@pytest.mark.parametrize("path", ["hiredis", "redis-py"])
async def test_an_idle_connection_outlives_the_redis_timeout(
    own_redis: tuple[RedisServer, str], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing subscribed (no stream open here), PINGs still keep the connection: Redis's
    ``timeout`` would close it every second here, and the process reconnect and warn as often."""
    server, socket = own_redis
    client = broker_client(server, socket, path)
    await client.config_set("timeout", 1)
    broker = RedisBroker(client, liveness_interval=LIVENESS, max_backoff=LIVENESS)
    try:
        assert await broker.start(wait=SETTLE)
        await asyncio.sleep(2.5)  # past two of Redis's timeouts
        assert broker.available and broker.stats.reconnects == 1
        assert "connection lost" not in caplog.text
        async with broker.subscribe("sse:session:idle") as subscription:
            published = await broker.publish("sse:session:idle", event(1))
            assert [e.id for e in await take(subscription, 1)] == [published]
    finally:
        await broker.close()
        await client.aclose()


@pytest.mark.parametrize("path", ["hiredis", "redis-py"])
async def test_a_quiet_connection_stays_and_a_hung_one_is_dropped(
    own_redis: tuple[RedisServer, str], path: str
) -> None:
    """PINGs keep a quiet connection (no reconnect over many liveness intervals); a Redis that
    stops answering (SIGSTOP) is dropped after three, and the stream is caught up once it is back."""
    server, socket = own_redis
    client = broker_client(server, socket, path)
    broker = RedisBroker(client, liveness_interval=LIVENESS, max_backoff=LIVENESS)
    try:
        assert await broker.start(wait=SETTLE)
        async with broker.subscribe("sse:session:quiet") as subscription:
            await asyncio.sleep(8 * LIVENESS)
            assert broker.available and broker.stats.reconnects == 1
            server.pause()
            try:
                await until(
                    lambda: broker.available, lambda up: not up, timeout=SETTLE, what="the hung Redis dropped"
                )
            finally:
                server.resume()
            await until(lambda: broker.available, timeout=SETTLE, what="the broker back on Redis")
            assert broker.stats.reconnects == 2
            published = await broker.publish("sse:session:quiet", event(1))
            assert [e.id for e in await take(subscription, 1)] == [published]
    finally:
        await broker.close()
        await client.aclose()
