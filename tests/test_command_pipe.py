"""The pipelined command connection (realtime/command_pipe.py) against a real redis-server:
many callers at once on one connection, each with its own reply; scripts loaded again after a
flush; redis-py's errors for a lost connection, a hung server and an error reply, and a working
connection again afterwards; AUTH and SELECT from the URL."""

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime.command_pipe import CLIENT_NAME, CommandPipe, PipeScript
from tests.support.redis_server import RedisServer

CALLERS = 500
TIMEOUT = 1.0
ECHO = PipeScript.of("return {KEYS[1], ARGV[1]}")


def pipe_to(url: str, timeout: float = TIMEOUT) -> CommandPipe:
    pipe = CommandPipe.for_url(url, timeout=timeout, connect_timeout=TIMEOUT)
    assert pipe is not None, url
    return pipe


async def pipe_clients(redis: Redis) -> int:
    clients = await redis.client_list()
    return sum(1 for client in clients if client.get("name") == CLIENT_NAME)


async def test_many_callers_at_once_share_one_connection_and_get_their_own_replies(
    redis_url: str, redis: Redis
) -> None:
    pipe = pipe_to(redis_url)
    try:
        await asyncio.gather(*(pipe.execute("SET", f"pipe:{i}", f"v{i}") for i in range(CALLERS)))
        replies = await asyncio.gather(
            *(pipe.execute("GET", f"pipe:{i}") for i in range(CALLERS)),
            *(pipe.run_script(ECHO, [f"k{i}"], [i]) for i in range(CALLERS)),
        )
        assert replies[:CALLERS] == [f"v{i}".encode() for i in range(CALLERS)]
        assert replies[CALLERS:] == [[f"k{i}".encode(), str(i).encode()] for i in range(CALLERS)]
        assert await pipe_clients(redis) == 1
    finally:
        await pipe.close()


async def test_a_script_is_loaded_again_after_a_flush_and_error_replies_raise(
    redis_url: str, redis: Redis
) -> None:
    pipe = pipe_to(redis_url)
    try:
        assert await pipe.run_script(ECHO, ["a"], ["b"]) == [b"a", b"b"]
        await redis.script_flush()
        assert await pipe.run_script(ECHO, ["c"], ["d"]) == [b"c", b"d"]
        await pipe.execute("SET", "pipe:text", "x")
        with pytest.raises(ResponseError):
            await pipe.execute("INCR", "pipe:text")
        assert await pipe.execute("GET", "pipe:text") == b"x"  # the connection goes on
    finally:
        await pipe.close()


async def test_a_killed_connection_fails_what_is_in_flight_and_the_next_command_connects_again(
    redis_url: str, redis: Redis
) -> None:
    pipe = pipe_to(redis_url)
    try:
        await pipe.execute("PING")
        blocked = asyncio.ensure_future(pipe.execute("BLPOP", "pipe:never", 0.5))
        await asyncio.sleep(0.1)
        for client in await redis.client_list():
            if client.get("name") == CLIENT_NAME:
                await redis.client_kill_filter(_id=client["id"])
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await pipe.execute("PING") == b"PONG"
        assert await pipe_clients(redis) == 1
    finally:
        await pipe.close()


async def test_a_hung_server_times_out_and_is_used_again_when_it_answers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    pipe = pipe_to(server.url, timeout=0.5)
    try:
        await pipe.execute("SET", "k", "v")
        server.pause()
        with pytest.raises(RedisTimeoutError):
            await pipe.execute("GET", "k")
        # Everything in flight fails with the oldest command (one timer for the connection).
        replies = await asyncio.gather(*(pipe.execute("GET", "k") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(reply, RedisTimeoutError) for reply in replies), replies
        server.resume()
        assert await pipe.execute("GET", "k") == b"v"
    finally:
        await pipe.close()
        server.stop()


async def test_auth_and_select_come_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    open_admin = Redis.from_url(server.url)
    await open_admin.config_set("requirepass", "s3cret-pass")  # a server of this test's own
    await open_admin.aclose()
    url = f"redis://:s3cret-pass@127.0.0.1:{server.port}/3"
    pipe = pipe_to(url)
    admin = Redis.from_url(url)
    try:
        await pipe.execute("SET", "pipe:db", "three")
        assert await admin.get("pipe:db") == b"three"
        db0 = Redis.from_url(url.replace("/3", "/0"))
        assert await db0.get("pipe:db") is None
        await db0.aclose()
        wrong = pipe_to(url.replace("s3cret-pass", "wrong-pass"))
        with pytest.raises(ResponseError):
            await wrong.execute("PING")
        await wrong.close()
    finally:
        await pipe.close()
        await admin.aclose()
        server.stop()


@pytest.mark.parametrize(
    "url",
    ["rediss://127.0.0.1:6379/0", "unix:///tmp/redis.sock", "redis://127.0.0.1:6379/0?socket_timeout=3"],
)
def test_what_the_pipe_cannot_serve_stays_with_redis_py(url: str) -> None:
    assert CommandPipe.for_url(url, timeout=TIMEOUT, connect_timeout=TIMEOUT) is None


async def test_a_closed_redis_is_a_connection_error(redis_url: str) -> None:
    pipe = CommandPipe("127.0.0.1", 1, timeout=TIMEOUT, connect_timeout=TIMEOUT)  # nothing listens on port 1
    with pytest.raises(RedisConnectionError):
        await pipe.execute("PING")
