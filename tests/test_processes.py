"""Real processes end to end: ``run.py`` servers, the suite's real redis-server, and real HTTP
and SSE clients (aiohttp) reading the wire format. Nothing is mocked; everything is on 127.0.0.1.

What these tests prove: the two-process production layout hands a conversation over across
processes through Redis; a process whose Redis is unreachable at start still serves, degraded,
on memory; Redis can be switched off by flag or environment; SIGTERM ends a process with open
streams cleanly and quickly; a client that leaves releases its Redis subscription; and 1,000
open streams on one process share a single Redis pub/sub connection.
"""

import asyncio
import logging
import time
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from app.backends import POOL_SIZE
from app.process.serving import SHUTDOWN_TIMEOUT
from tests.support.api import assert_json_error, call, chat, create, health, streams_open, transcript
from tests.support.checks import check_ids
from tests.support.handoff import check_message, run_handoff
from tests.support.processes import (
    MANY_STARTS,
    REDIS_ON,
    PeerProcess,
    StartServer,
    free_port,
    raise_open_file_limit,
)
from tests.support.sse import AMBIENT, SSEEvent, SSEStream, connect, open_stream
from tests.support.wait import gather_in_batches, wait_for

logger = logging.getLogger(__name__)


PROBE_NAME = "switchboard-test-probe"
STREAM_COUNT = 1000


# --- helpers -------------------------------------------------------------------------------


async def numsub(redis: Redis, *channels: str) -> dict[str, int]:
    return {str(channel): int(count) for channel, count in await redis.pubsub_numsub(*channels)}


# --- 1. two processes, one Redis ------------------------------------------------------------


async def test_handoff_across_chatbot_and_workbench_processes(
    server_process: StartServer, redis_url: str
) -> None:
    """A full handoff works across a --chatbot and a --workbench process sharing one Redis."""
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        for process, component in ((chatbot, "chatbot"), (workbench, "workbench")):
            body = await health(http, process.url)
            assert body["status"] == "ok" and body["broker"] == "redis", body
            assert body["degraded"] is False, body
            assert body["components"] == [component], body

        # Each process answers only for its own sub-app: JSON 404 for the other's paths.
        await assert_json_error(http, "GET", f"{chatbot.url}/workbench/api/sessions", 404, "not_found")
        await assert_json_error(
            http, "GET", f"{chatbot.url}/workbench/api/agents/a1/events", 404, "not_found"
        )
        await assert_json_error(
            http, "POST", f"{chatbot.url}/workbench/api/sessions/x/takeover", 404, "not_found"
        )
        await assert_json_error(http, "POST", f"{workbench.url}/chatbot/api/chat", 404, "not_found")
        await assert_json_error(http, "POST", f"{workbench.url}/chatbot/api/sessions", 404, "not_found")
        await assert_json_error(
            http, "GET", f"{workbench.url}/chatbot/api/sessions/x/events", 404, "not_found"
        )

        await run_handoff(http, chatbot.url, workbench.url, "cross-process-1", "agent-7")


# --- 2. Redis unreachable at start ----------------------------------------------------------


async def test_unreachable_redis_at_start_serves_degraded_from_memory(
    server_process: StartServer,
) -> None:
    """With Redis unreachable at start the process serves degraded on memory, handoff included."""
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    process = server_process("--redis-url", dead_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        body = await health(http, process.url)
        assert body["status"] == "degraded", body
        assert body["broker"] == "memory", body
        assert body["degraded"] is True, body
        assert body["components"] == ["chatbot", "workbench"], body

        await run_handoff(http, process.url, process.url, "degraded-1", "agent-3")

    warnings = [line for line in process.log().splitlines() if "WARNING" in line and "redis" in line.lower()]
    assert warnings, process.log()


# --- 3. Redis switched off -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--no-redis",), REDIS_ON),
        ((), {"USE_REDIS_SSE": "false"}),
    ],
    ids=["flag", "environment"],
)
async def test_redis_switched_off_is_memory_and_not_degraded(
    server_process: StartServer, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """--no-redis and USE_REDIS_SSE=false give the memory broker, not degraded (Redis not tried)."""
    # A Redis URL nobody answers: switched off, the process must not even try it.
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    process = server_process(*args, "--redis-url", dead_url, env=env)
    async with aiohttp.ClientSession() as http:
        body = await health(http, process.url)
        assert body["status"] == "ok", body
        assert body["broker"] == "memory", body
        assert body["degraded"] is False, body

        await create(http, "m1", base=process.url)
        async with open_stream(http, f"{process.url}/chatbot/api/sessions/m1/events") as (stream, _connected):
            await chat(http, "m1", "hi", base=process.url)
            said, _bot = await stream.take(2)
            check_message(said, "m1", "customer", "ai_chatbot", "hi")
    # Nothing about Redis is worth a warning (--insecure, which these processes run with, is).
    warnings = [line for line in process.log().splitlines() if "WARNING" in line]
    assert all("--insecure" in line for line in warnings), process.log()


# --- 4. clean shutdown -----------------------------------------------------------------------


async def test_sigterm_with_open_streams_exits_zero_quickly(
    server_process: StartServer, redis_url: str
) -> None:
    """SIGTERM with open SSE streams on Redis exits 0 in < 5 s and ends the streams with EOF."""
    process = server_process("--redis-url", redis_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        await call(http, "POST", f"{process.url}/chatbot/api/sessions", {"session_name": "bye"}, status=201)
        async with (
            open_stream(http, f"{process.url}/chatbot/api/sessions/bye/events") as (session_s, _),
            open_stream(http, f"{process.url}/workbench/api/agents/a1/events") as (agent_s, _),
        ):
            body = await health(http, process.url)
            assert body["broker"] == "redis" and body["streams"] == 2, body
            readers = [
                asyncio.create_task(session_s.read_to_end()),
                asyncio.create_task(agent_s.read_to_end()),
            ]
            started = time.monotonic()
            status = await asyncio.to_thread(process.stop)
            elapsed = time.monotonic() - started
            async with asyncio.timeout(5):
                leftovers = await asyncio.gather(*readers)  # raises on a broken body

    logger.info("SIGTERM with 2 open streams: exit status %s after %.2f s", status, elapsed)
    assert status == 0, process.log()
    assert elapsed < 5.0, f"shutdown took {elapsed:.2f}s\n{process.log()}"
    assert all(event.type in AMBIENT for events in leftovers for event in events), leftovers
    assert "Traceback" not in process.log(), process.log()


async def test_sigterm_with_a_request_still_running_exits_within_the_bound(
    server_process: StartServer, redis_url: str, tmp_path: Path
) -> None:
    """A request that does not finish (a chat whose bot answers a word every 3 s) gets the
    grace of app.process.serving (SHUTDOWN_TIMEOUT, which aiohttp waits twice), then is cut
    unanswered: the process exits 0 within that bound, under the 10 s a supervisor gives it,
    and keeps the customer's message."""
    secret = "stop-test-bot-secret"
    with PeerProcess("examples.webhook_bot", "--secret", secret, "--pace", "3", log_dir=tmp_path) as bot:
        process = server_process(
            "--redis-url",
            redis_url,
            "--bot",
            "webhook",
            "--bot-url",
            f"{bot.url}/bot",
            "--bot-secret",
            secret,
            env=REDIS_ON,
        )
        async with aiohttp.ClientSession() as http:
            await call(
                http, "POST", f"{process.url}/chatbot/api/sessions", {"session_name": "slow"}, status=201
            )
            async with open_stream(http, f"{process.url}/chatbot/api/sessions/slow/events") as (stream, _):
                body = {"session_name": "slow", "content": "where is my order?"}
                asking = asyncio.create_task(http.post(f"{process.url}/chatbot/api/chat", json=body))
                await stream.next_of("typing")  # the bot is answering: the chat is in flight
                started = time.monotonic()
                status = await asyncio.to_thread(process.stop)
                elapsed = time.monotonic() - started
            with pytest.raises(aiohttp.ClientError):  # cut: never answered
                async with asyncio.timeout(5):
                    await asking
            # Started again: the customer's message is kept; the unfinished answer is not.
            await asyncio.to_thread(process.start)
            kept = await transcript(http, "slow", base=process.url)
            assert [(m["role"], m["content"]) for m in kept] == [("customer", "where is my order?")], kept

    logger.info("SIGTERM with a request in flight: exit status %s after %.2f s", status, elapsed)
    assert status == 0, process.log()
    assert elapsed < 2 * SHUTDOWN_TIMEOUT + 1.5, f"shutdown took {elapsed:.2f}s\n{process.log()}"
    assert "Traceback" not in process.log(), process.log()


# --- 5. subscriptions released when a client leaves ------------------------------------------


async def test_client_disconnect_releases_redis_subscriptions(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    """Closing an SSE client connection unsubscribes its Redis channels within 3 s."""
    process = server_process("--redis-url", redis_url, env=REDIS_ON)
    channels = ("sse:session:leaver", "sse:agent:a9", "sse:broadcast")
    async with aiohttp.ClientSession() as http:
        await call(
            http, "POST", f"{process.url}/chatbot/api/sessions", {"session_name": "leaver"}, status=201
        )
        assert await numsub(redis, *channels) == dict.fromkeys(channels, 0)
        async with (
            open_stream(http, f"{process.url}/chatbot/api/sessions/leaver/events"),
            open_stream(http, f"{process.url}/workbench/api/agents/a9/events"),
        ):
            assert await numsub(redis, *channels) == dict.fromkeys(channels, 1)
            assert (await health(http, process.url))["streams"] == 2
        # Leaving the blocks closed both client connections mid-stream.
        started = time.monotonic()
        after = await wait_for(lambda: numsub(redis, *channels), dict.fromkeys(channels, 0), timeout=3.0)
        elapsed = time.monotonic() - started
        assert after == dict.fromkeys(channels, 0), after
        logger.info("subscriptions released %.2f s after the client left", elapsed)
        streams = await wait_for(lambda: streams_open(http, process.url), 0, timeout=3.0)
        assert streams == 0, streams


# --- 6. 1,000 streams, one pub/sub connection ------------------------------------------------


async def test_thousand_streams_share_one_pubsub_connection(
    server_process: StartServer, redis_url: str
) -> None:
    """1,000 open streams on one process hold exactly one Redis pub/sub connection.

    Layout: 400 sessions x 2 streams (one through /chatbot, one through /workbench) plus
    200 agent streams = 1,000 streams on 1,001 channels (400 session, 400 presence: the
    customer streams' silent subscription that says the customer is connected, 200 agent,
    broadcast).
    Measured (2 CPUs, 20 runs): 1,000 streams open in 0.4-0.7 s; exactly 1 connection with
    subscriptions (sub=1001; 601 before presence); the server process held 66 Redis connections in all, i.e. its
    whole BlockingConnectionPool (POOL_SIZE=64), saturated by opening 100 streams at a time,
    and the two connections of its own beside it: the pub/sub connection (realtime.pubsub_wire)
    and the store's command pipe. Logged per run (logger tests.test_processes, INFO).
    """
    # Client and server each hold one socket per stream; the server inherits this limit.
    limit = raise_open_file_limit(2 * STREAM_COUNT + 512)
    assert limit >= 2 * STREAM_COUNT + 512, limit
    process = server_process("--redis-url", redis_url, *MANY_STARTS, env=REDIS_ON)
    probe = Redis.from_url(redis_url, decode_responses=True, client_name=PROBE_NAME)
    sessions = [f"load-{i:03d}" for i in range(400)]
    agents = [f"agent-{i:03d}" for i in range(200)]
    base = process.url
    streams: list[tuple[SSEStream, SSEEvent]] = []
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            try:
                await gather_in_batches(
                    [
                        partial(
                            call,
                            http,
                            "POST",
                            f"{base}/chatbot/api/sessions",
                            {"session_name": n},
                            status=201,
                        )
                        for n in sessions
                    ],
                    batch=100,
                    timeout=20,
                )
                urls = [
                    f"{base}/{side}/api/sessions/{n}/events"
                    for n in sessions
                    for side in ("chatbot", "workbench")
                ] + [f"{base}/workbench/api/agents/{a}/events" for a in agents]
                assert len(urls) == STREAM_COUNT
                opened = time.monotonic()
                # Appended as each batch completes, so a failure still closes what was opened.
                for start in range(0, len(urls), 100):
                    async with asyncio.timeout(20):
                        streams.extend(
                            await asyncio.gather(
                                *(connect(http, url, timeout=10.0) for url in urls[start : start + 100])
                            )
                        )
                open_time = time.monotonic() - opened
                assert len(streams) == STREAM_COUNT

                body = await health(http, base)
                assert body["streams"] == STREAM_COUNT, body
                assert body["broker"] == "redis", body

                clients = await probe.client_list()
                server_clients = [c for c in clients if c.get("name") != PROBE_NAME]
                subscribers = [c for c in server_clients if int(c.get("sub", 0)) > 0]
                # Each session's channel, and its presence channel (held by the customer's
                # streams, which say that the customer is connected); the agents'; broadcast.
                expected_channels = 2 * len(sessions) + len(agents) + 1
                logger.info(
                    "%d streams opened in %.1f s; Redis clients: %d in total, %d of the "
                    "server process, %d with pub/sub subscriptions (sub=%s)",
                    len(streams),
                    open_time,
                    len(clients),
                    len(server_clients),
                    len(subscribers),
                    [c.get("sub") for c in subscribers],
                )
                assert len(subscribers) == 1, subscribers
                assert int(subscribers[0]["sub"]) == expected_channels, subscribers[0]
                # The pool, the pub/sub connection and the command pipe.
                assert len(server_clients) <= POOL_SIZE + 2, len(server_clients)

                sample = sessions[::40]
                sample_channels = (
                    [f"sse:session:{n}" for n in sample]
                    + [f"sse:agent:{a}" for a in agents[::40]]
                    + ["sse:broadcast"]
                )
                assert await numsub(probe, *sample_channels) == dict.fromkeys(sample_channels, 1)

                # A chat message reaches both streams of each sampled session.
                by_url = dict(zip(urls, streams, strict=True))
                for n in sample:
                    content = f"load message for {n}"
                    await call(
                        http, "POST", f"{base}/chatbot/api/chat", {"session_name": n, "content": content}
                    )
                    for side in ("chatbot", "workbench"):
                        stream, _ = by_url[f"{base}/{side}/api/sessions/{n}/events"]
                        said, _bot = await stream.take(2)
                        check_message(said, n, "customer", "ai_chatbot", content)

                # One broadcast reaches all 200 agent streams.
                await call(
                    http, "POST", f"{base}/chatbot/api/manual/escalate", {"session_name": sessions[-1]}
                )
                agent_streams = [by_url[f"{base}/workbench/api/agents/{a}/events"][0] for a in agents]
                async with asyncio.timeout(15):
                    received = await asyncio.gather(*(s.take(1, 10) for s in agent_streams))
                for [event] in received:
                    assert event.type == "transfer_request", event
                    assert event.payload["session_name"] == sessions[-1], event
            finally:
                for stream, _ in streams:
                    stream.response.close()

            # Everything closed: every channel unsubscribed and no stream left open.
            remaining = await wait_for(lambda: probe.pubsub_channels("sse:*"), [], timeout=10.0)
            assert remaining == [], (remaining or [])[:10]
            assert await numsub(probe, *sample_channels) == dict.fromkeys(sample_channels, 0)
            assert await wait_for(lambda: streams_open(http, base), 0, timeout=10.0) == 0
            clients = await probe.client_list()
            subscribers = [c for c in clients if int(c.get("sub", 0)) > 0]
            assert subscribers == [], subscribers
    finally:
        await probe.aclose()
    logger.info("1,000-stream test took %.1f s", time.monotonic() - started)


# --- 7. event ids on a stream of two channels ------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_ids_increase_across_channels_of_one_stream(
    server_process: StartServer, redis_url: str, backend: str
) -> None:
    """On an agent stream (agent channel + broadcast) every event id is larger than the last.

    docs/api.md: "Event ids are opaque strings, increasing within a stream", and an id is the
    position a client resumes from, so two events of one stream must never share an id.
    Events are published on the stream's two channels at the same moment, in rounds.
    """
    args = ("--no-redis",) if backend == "memory" else ("--redis-url", redis_url)
    process = server_process(*args, *MANY_STARTS, env=REDIS_ON)
    base = process.url
    rounds = 40
    async with aiohttp.ClientSession() as http:
        await call(http, "POST", f"{base}/chatbot/api/sessions", {"session_name": "held"}, status=201)
        await call(http, "POST", f"{base}/workbench/api/sessions/held/takeover", {"agent_id": "a1"})
        await gather_in_batches(
            [
                partial(
                    call, http, "POST", f"{base}/chatbot/api/sessions", {"session_name": f"q{i}"}, status=201
                )
                for i in range(rounds)
            ],
            batch=20,
            timeout=10,
        )
        async with open_stream(http, f"{base}/workbench/api/agents/a1/events") as (stream, connected):
            for i in range(rounds):
                # One event on sse:agent:a1 (a customer message to the session a1 holds) and
                # one on sse:broadcast (a transfer request), published concurrently.
                async with asyncio.timeout(5):
                    await asyncio.gather(
                        call(
                            http,
                            "POST",
                            f"{base}/chatbot/api/chat",
                            {"session_name": "held", "content": f"message {i}"},
                        ),
                        call(http, "POST", f"{base}/chatbot/api/manual/escalate", {"session_name": f"q{i}"}),
                    )
            events = await stream.take(2 * rounds, timeout=10)
    assert sorted(event.type for event in events) == sorted(
        ["new_message"] * rounds + ["transfer_request"] * rounds
    )
    check_ids([connected, *events])
