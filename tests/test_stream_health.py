"""GET /workbench/api/sessions/{name}/stream: who listens to a session, across processes.

Against a split deployment on a real Redis (and on the Redis Cluster), with real streams:
the counts are of processes (Redis counts pub/sub connections, one per process), the
customer's presence is seen from the other process, and it goes when the customer leaves."""

import time
from functools import partial
from typing import Any

import aiohttp
import pytest

from tests.support import wait
from tests.support.api import CHATBOT, WORKBENCH, Http, call, chat, create
from tests.support.app_server import AppClient
from tests.support.processes import REDIS_ON, StartServer, free_port
from tests.support.sse import open_stream

SETTLE = 5.0  # longest wait for a subscription change to show in Redis


# ``await until(read, done)``: the stream health ``read`` gives once ``done`` holds for it.
until = partial(wait.until, timeout=SETTLE, what="stream health")


async def health_of(http: Http, name: str, base: str = "") -> dict[str, Any]:
    result: dict[str, Any] = await call(http, "GET", f"{base}{WORKBENCH}/sessions/{name}/stream")
    return result


async def test_in_one_process(client: AppClient, backend: str) -> None:
    """Memory or Redis, one process: streams counted here; the last event is the newest."""
    await create(client, "h1")
    quiet = await health_of(client, "h1")
    assert quiet == {
        "session_name": "h1",
        "subscribed_processes": 0,
        "streams_in_this_process": 0,
        "customer_connected": False,
        "last_event": None,
        "scope": "process" if backend == "memory" else "deployment",
    }
    async with open_stream(client, f"{WORKBENCH}/sessions/h1/events"):
        agent_only = await until(lambda: health_of(client, "h1"), lambda b: b["subscribed_processes"] == 1)
        assert agent_only["streams_in_this_process"] == 1
        assert agent_only["customer_connected"] is False  # an agent's view is not the customer
        async with open_stream(client, f"{CHATBOT}/sessions/h1/events") as (stream, _):
            answer = await chat(client, "h1", "hello")
            said = await stream.next_of("new_message")
            await stream.next_of("new_message")  # the bot's answer
            both = await until(lambda: health_of(client, "h1"), lambda b: b["customer_connected"])
            assert both["customer_connected"] is True
            assert both["subscribed_processes"] == 1  # one process, whatever its streams
            assert both["streams_in_this_process"] == 2
            assert said.payload["message"]["id"] == answer["message"]["id"]
            newest = both["last_event"]
            assert newest is not None and newest["time"] == pytest.approx(time.time(), abs=30)
        gone = await until(lambda: health_of(client, "h1"), lambda b: not b["customer_connected"])
        assert gone["customer_connected"] is False and gone["streams_in_this_process"] == 1
    assert (await until(lambda: health_of(client, "h1"), lambda b: b["subscribed_processes"] == 0))[
        "subscribed_processes"
    ] == 0
    missing = await call(client, "GET", f"{WORKBENCH}/sessions/nobody/stream", status=404)
    assert missing["error"]["code"] == "session_not_found"


async def test_while_redis_is_away_answers_for_this_process(server_process: StartServer) -> None:
    """`make run` with no Redis answering (memory, degraded): the README tour's step answers
    200 from what this process knows, and says so; it does not ask the absent Redis."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    base = server_process("--redis-url", nowhere, env=REDIS_ON).url
    async with aiohttp.ClientSession() as http:
        await create(http, "away", base=base)
        await chat(http, "away", "hello", base=base)
        alone = await health_of(http, "away", base)
        assert alone == {
            "session_name": "away",
            "subscribed_processes": 0,
            "streams_in_this_process": 0,
            "customer_connected": False,
            "last_event": None,
            "scope": "process",
        }
        async with open_stream(http, f"{base}{CHATBOT}/sessions/away/events"):
            here = await until(lambda: health_of(http, "away", base), lambda b: b["customer_connected"])
        assert here["customer_connected"] is True and here["scope"] == "process"
        assert here["subscribed_processes"] == 1 and here["streams_in_this_process"] == 1


async def split_deployment(server_process: StartServer, redis_url: str) -> tuple[str, str]:
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    return chatbot.url, workbench.url


async def test_across_a_split_deployment(server_process: StartServer, redis_url: str) -> None:
    await check_split_deployment(server_process, redis_url)


async def test_across_a_split_deployment_on_a_cluster(server_process: StartServer, cluster_url: str) -> None:
    """The same on the Redis Cluster: PUBSUB SHARDNUMSUB on the shard of the session."""
    await check_split_deployment(server_process, cluster_url)


async def check_split_deployment(server_process: StartServer, url: str) -> None:
    """The workbench process sees the customer's stream, held by the chatbot process, come and
    go; both processes holding streams count as two."""
    customer_side, agent_side = await split_deployment(server_process, url)
    async with aiohttp.ClientSession() as http:
        await create(http, "split", base=customer_side)
        read = partial(health_of, http, "split", agent_side)
        assert (await read())["customer_connected"] is False
        async with open_stream(http, f"{customer_side}{CHATBOT}/sessions/split/events"):
            here = await until(read, lambda b: b["customer_connected"])
            assert here["customer_connected"] is True
            assert here["subscribed_processes"] == 1 and here["streams_in_this_process"] == 0
            async with open_stream(http, f"{agent_side}{WORKBENCH}/sessions/split/events"):
                two = await until(read, lambda b: b["subscribed_processes"] == 2)
                assert two["subscribed_processes"] == 2 and two["streams_in_this_process"] == 1
                await chat(http, "split", "anyone?", base=customer_side)
                fresh = await until(read, lambda b: b["last_event"] is not None)
                assert fresh["last_event"] is not None
        left = await until(read, lambda b: not b["customer_connected"] and b["subscribed_processes"] == 0)
        assert left["customer_connected"] is False and left["subscribed_processes"] == 0
