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
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from app.backends import POOL_SIZE
from realtime import ids
from tests.processes import ServerProcess, free_port
from tests.sse import SSEEvent, SSEStream, open_stream

logger = logging.getLogger(__name__)

StartServer = Callable[..., ServerProcess]

# Explicit, so a developer's USE_REDIS_SSE=false in the environment cannot change these tests.
REDIS_ON = {"USE_REDIS_SSE": "true"}
PROBE_NAME = "switchboard-test-probe"
STREAM_COUNT = 1000


# --- helpers -------------------------------------------------------------------------------


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> dict[str, Any]:
    async with http.get(url) as response:
        body = await response.json()
        assert response.status == status, (url, response.status, body)
        return body  # type: ignore[no-any-return]


async def post_json(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], status: int = 200
) -> dict[str, Any]:
    async with http.post(url, json=body) as response:
        answer = await response.json()
        assert response.status == status, (url, response.status, answer)
        return answer  # type: ignore[no-any-return]


async def assert_json_404(http: aiohttp.ClientSession, method: str, url: str) -> None:
    """The route is not served here, and the refusal is the JSON error shape."""
    async with http.request(method, url, json={} if method == "POST" else None) as response:
        assert response.status == 404, (method, url, response.status)
        assert response.content_type == "application/json", response.content_type
        body = await response.json()
        assert body["error"]["code"] == "not_found", body


async def health(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    return await get_json(http, f"{base}/health")


async def numsub(redis: Redis, *channels: str) -> dict[str, int]:
    return {str(channel): int(count) for channel, count in await redis.pubsub_numsub(*channels)}


async def wait_for(
    fetch: Callable[[], Awaitable[Any]],
    expected: Any,
    timeout: float,
    interval: float = 0.05,
) -> Any:
    """Poll ``fetch`` until it returns ``expected`` (bounded in time and count); return the
    last value seen so the caller's assertion shows it."""
    value: Any = None
    try:
        async with asyncio.timeout(timeout):
            for _ in range(int(timeout / interval) + 1):
                value = await fetch()
                if value == expected:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        pass
    return value


def check_envelope(event: SSEEvent, source: str) -> None:
    """The four envelope keys, a server-set integer timestamp and the expected source."""
    assert set(event.data) == {"type", "payload", "timestamp", "source"}, event.data
    assert event.data["source"] == source, event
    timestamp = event.data["timestamp"]
    assert isinstance(timestamp, int) and not isinstance(timestamp, bool), event
    assert abs(timestamp - time.time()) < 120, event


def check_ids(events: list[SSEEvent], *, strictly: bool = True) -> None:
    """Every event but heartbeats carries an id; ids increase within the stream (``strictly``:
    no two equal; the ``connected`` id is a position, it may equal nothing but precede all)."""
    with_ids = [event for event in events if event.type != "heartbeat"]
    for event in with_ids:
        assert event.id is not None and ids.is_event_id(event.id), event
    positions = [ids.parse(event.id) for event in with_ids]  # type: ignore[arg-type]
    assert positions == sorted(positions), [event.id for event in with_ids]
    if strictly:
        repeated = [
            (before.type, after.type, after.id)
            for before, after in zip(with_ids, with_ids[1:])
            if ids.parse(before.id) >= ids.parse(after.id)  # type: ignore[arg-type]
        ]
        assert not repeated, f"{len(repeated)} ids not above the previous one: {repeated[:5]}"


def check_message(event: SSEEvent, name: str, role: str, source: str, content: str | None = None,
                  agent_id: str | None = None) -> dict[str, Any]:
    assert event.type == "new_message", event
    check_envelope(event, source)
    assert event.payload["session_name"] == name, event
    message = event.payload["message"]
    assert message["role"] == role, event
    assert message["id"], event
    assert isinstance(message["created_at"], int), event
    assert message["agent_id"] == agent_id, event
    if content is not None:
        assert message["content"] == content, event
    return message  # type: ignore[no-any-return]


class Recorder:
    """An SSE stream whose events are all kept, for the id checks at the end."""

    def __init__(self, stream: SSEStream, connected: SSEEvent) -> None:
        self.stream = stream
        self.events = [connected]

    async def take(self, count: int, timeout: float = 5.0) -> list[SSEEvent]:
        events = await self.stream.take(count, timeout)
        self.events.extend(events)
        return events

    async def assert_quiet(self, seconds: float = 0.4) -> None:
        await self.stream.assert_quiet(seconds)


async def run_handoff(
    http: aiohttp.ClientSession, chatbot: str, workbench: str, name: str, agent: str
) -> None:
    """The whole handoff: customer on ``chatbot``'s process, agent on ``workbench``'s (which
    may be the same process); every step checked on the customer's and the agent's streams."""
    created = await post_json(
        http, f"{chatbot}/chatbot/api/sessions", {"session_name": name}, status=201
    )
    assert created["session_name"] == name and created["status"] == "bot_active", created
    assert created["agent_id"] is None, created
    session_channel, agent_channel = f"sse:session:{name}", f"sse:agent:{agent}"

    async with (
        open_stream(http, f"{chatbot}/chatbot/api/sessions/{name}/events") as (c_stream, c_conn),
        open_stream(http, f"{workbench}/workbench/api/agents/{agent}/events") as (a_stream, a_conn),
        open_stream(http, f"{workbench}/workbench/api/sessions/{name}/events") as (w_stream, w_conn),
    ):
        customer, agent_view, watch = (
            Recorder(c_stream, c_conn), Recorder(a_stream, a_conn), Recorder(w_stream, w_conn)
        )
        for connected in (c_conn, a_conn, w_conn):
            check_envelope(connected, "system")
            assert connected.id is not None, connected
        assert c_conn.payload["channels"] == [session_channel], c_conn
        assert c_conn.payload["session_name"] == name, c_conn
        assert w_conn.payload["channels"] == [session_channel], w_conn
        assert a_conn.payload["agent_id"] == agent, a_conn
        assert sorted(a_conn.payload["channels"]) == sorted([agent_channel, "sse:broadcast"])

        # 1. The bot answers a greeting; both session streams (both processes) see it.
        answer = await post_json(
            http, f"{chatbot}/chatbot/api/chat", {"session_name": name, "content": "hello"}
        )
        assert answer["reply"] is not None and answer["reply"]["role"] == "bot", answer
        for view in (customer, watch):
            said, bot = await view.take(2)
            check_message(said, name, "customer", "ai_chatbot", "hello")
            check_message(bot, name, "bot", "ai_chatbot", answer["reply"]["content"])

        # 2. The customer asks for a human: the agent (other process) gets transfer_request.
        answer = await post_json(
            http, f"{chatbot}/chatbot/api/chat",
            {"session_name": name, "content": "I want to talk to a human please"},
        )
        assert answer["session"]["status"] == "waiting_agent", answer
        said, bot, change = await customer.take(3)
        check_message(said, name, "customer", "ai_chatbot", "I want to talk to a human please")
        check_message(bot, name, "bot", "ai_chatbot")
        assert change.type == "status_change", change
        check_envelope(change, "ai_chatbot")
        assert change.payload["session_name"] == name, change
        assert change.payload["status"] == "waiting_agent", change
        assert change.payload["previous_status"] == "bot_active", change
        assert change.payload["agent_id"] is None, change
        [transfer] = await agent_view.take(1)
        assert transfer.type == "transfer_request", transfer
        check_envelope(transfer, "ai_chatbot")
        assert transfer.payload["session_name"] == name, transfer
        assert transfer.payload["status"] == "waiting_agent", transfer
        assert isinstance(transfer.payload["reason"], str) and transfer.payload["reason"], transfer
        await watch.take(3)
        queue = await get_json(http, f"{workbench}/workbench/api/sessions?status=waiting_agent")
        assert name in [s["session_name"] for s in queue["sessions"]], queue

        # 3. The agent takes over through the workbench process.
        taken = await post_json(
            http, f"{workbench}/workbench/api/sessions/{name}/takeover", {"agent_id": agent}
        )
        assert taken["status"] == "agent_active" and taken["agent_id"] == agent, taken
        for view in (customer, watch):
            joined, change = await view.take(2)
            assert joined.type == "agent_joined", joined
            check_envelope(joined, "agent_workbench")
            assert joined.payload["session_name"] == name, joined
            assert joined.payload["agent_id"] == agent, joined
            assert change.type == "status_change", change
            check_envelope(change, "agent_workbench")
            assert change.payload["status"] == "agent_active", change
            assert change.payload["previous_status"] == "waiting_agent", change
            assert change.payload["agent_id"] == agent, change
        [queue_change] = await agent_view.take(1)
        assert queue_change.type == "status_change", queue_change
        check_envelope(queue_change, "agent_workbench")
        assert queue_change.payload["status"] == "agent_active", queue_change
        assert queue_change.payload["agent_id"] == agent, queue_change

        # 4. A customer message goes to the agent (other process); the bot stays silent.
        answer = await post_json(
            http, f"{chatbot}/chatbot/api/chat",
            {"session_name": name, "content": "where is my order?"},
        )
        assert answer["reply"] is None, answer
        [said] = await customer.take(1)
        check_message(said, name, "customer", "ai_chatbot", "where is my order?")
        [forwarded] = await agent_view.take(1)
        check_message(forwarded, name, "customer", "ai_chatbot", "where is my order?")
        assert forwarded.payload["message"]["id"] == said.payload["message"]["id"]
        await customer.assert_quiet()
        await watch.take(1)

        # 5. The agent answers through the workbench; the customer's stream (other process) sees it.
        sent = await post_json(
            http, f"{workbench}/workbench/api/sessions/{name}/messages",
            {"agent_id": agent, "content": "It ships tomorrow."},
        )
        assert sent["message"]["role"] == "agent" and sent["message"]["agent_id"] == agent, sent
        for view in (customer, watch):
            [reply] = await view.take(1)
            message = check_message(
                reply, name, "agent", "agent_workbench", "It ships tomorrow.", agent_id=agent
            )
            assert message["id"] == sent["message"]["id"], (message, sent)

        # 6. Release: agent_left + status_change back to the bot, agent_id null.
        released = await post_json(
            http, f"{workbench}/workbench/api/sessions/{name}/release", {"agent_id": agent}
        )
        assert released["status"] == "bot_active" and released["agent_id"] is None, released
        for view in (customer, watch):
            left, change = await view.take(2)
            assert left.type == "agent_left", left
            check_envelope(left, "agent_workbench")
            assert left.payload["agent_id"] == agent and left.payload["session_name"] == name
            assert change.type == "status_change", change
            check_envelope(change, "agent_workbench")
            assert change.payload["status"] == "bot_active", change
            assert change.payload["previous_status"] == "agent_active", change
            assert change.payload["agent_id"] is None, change
        [queue_change] = await agent_view.take(1)
        assert queue_change.type == "status_change", queue_change
        assert queue_change.payload["status"] == "bot_active", queue_change

        # 7. The bot answers again; the agent no longer hears the customer.
        answer = await post_json(
            http, f"{chatbot}/chatbot/api/chat",
            {"session_name": name, "content": "thanks, one more thing?"},
        )
        assert answer["reply"] is not None, answer
        said, bot = await customer.take(2)
        check_message(said, name, "customer", "ai_chatbot", "thanks, one more thing?")
        check_message(bot, name, "bot", "ai_chatbot", answer["reply"]["content"])
        await watch.take(2)
        await agent_view.assert_quiet()

        check_ids(customer.events)
        check_ids(watch.events)
        # Two channels: strictness across them is test_ids_increase_across_channels' business.
        check_ids(agent_view.events, strictly=False)

    transcript = await get_json(http, f"{workbench}/workbench/api/sessions/{name}/messages")
    assert [m["role"] for m in transcript["messages"]] == [
        "customer", "bot", "customer", "bot", "customer", "agent", "customer", "bot"
    ], transcript


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
        await assert_json_404(http, "GET", f"{chatbot.url}/workbench/api/sessions")
        await assert_json_404(http, "GET", f"{chatbot.url}/workbench/api/agents/a1/events")
        await assert_json_404(http, "POST", f"{chatbot.url}/workbench/api/sessions/x/takeover")
        await assert_json_404(http, "POST", f"{workbench.url}/chatbot/api/chat")
        await assert_json_404(http, "POST", f"{workbench.url}/chatbot/api/sessions")
        await assert_json_404(http, "GET", f"{workbench.url}/chatbot/api/sessions/x/events")

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

    warnings = [
        line for line in process.log().splitlines()
        if "WARNING" in line and "redis" in line.lower()
    ]
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

        await post_json(http, f"{process.url}/chatbot/api/sessions", {"session_name": "m1"}, 201)
        async with open_stream(http, f"{process.url}/chatbot/api/sessions/m1/events") as (
            stream, _connected
        ):
            await post_json(
                http, f"{process.url}/chatbot/api/chat", {"session_name": "m1", "content": "hi"}
            )
            said, _bot = await stream.take(2)
            check_message(said, "m1", "customer", "ai_chatbot", "hi")
    # Nothing about Redis is worth a warning (--insecure, which these processes run with, is).
    warnings = [line for line in process.log().splitlines() if "WARNING" in line]
    assert all("--insecure" in line for line in warnings), process.log()


# --- 4. clean shutdown -----------------------------------------------------------------------


async def read_to_end(stream: SSEStream, limit: int = 100, timeout: float = 9.0) -> list[SSEEvent]:
    """Read until the server ends the stream (EOF); fail if it does not end in time."""
    events: list[SSEEvent] = []
    async with asyncio.timeout(timeout):
        for _ in range(limit):
            try:
                events.append(await stream.next(timeout))
            except EOFError:
                return events
    raise AssertionError(f"stream did not end after {limit} events: {events}")


async def test_sigterm_with_open_streams_exits_zero_quickly(
    server_process: StartServer, redis_url: str
) -> None:
    """SIGTERM with open SSE streams on Redis exits 0 in < 5 s and ends the streams with EOF."""
    process = server_process("--redis-url", redis_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        await post_json(http, f"{process.url}/chatbot/api/sessions", {"session_name": "bye"}, 201)
        async with (
            open_stream(http, f"{process.url}/chatbot/api/sessions/bye/events") as (session_s, _),
            open_stream(http, f"{process.url}/workbench/api/agents/a1/events") as (agent_s, _),
        ):
            body = await health(http, process.url)
            assert body["broker"] == "redis" and body["streams"] == 2, body
            readers = [
                asyncio.create_task(read_to_end(session_s)),
                asyncio.create_task(read_to_end(agent_s)),
            ]
            started = time.monotonic()
            status = await asyncio.to_thread(process.stop)
            elapsed = time.monotonic() - started
            async with asyncio.timeout(5):
                leftovers = await asyncio.gather(*readers)  # raises on a broken body

    logger.info("SIGTERM with 2 open streams: exit status %s after %.2f s", status, elapsed)
    assert status == 0, process.log()
    assert elapsed < 5.0, f"shutdown took {elapsed:.2f}s\n{process.log()}"
    assert all(event.type == "heartbeat" for events in leftovers for event in events), leftovers
    assert "Traceback" not in process.log(), process.log()


# --- 5. subscriptions released when a client leaves ------------------------------------------


async def test_client_disconnect_releases_redis_subscriptions(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    """Closing an SSE client connection unsubscribes its Redis channels within 3 s."""
    process = server_process("--redis-url", redis_url, env=REDIS_ON)
    channels = ("sse:session:leaver", "sse:agent:a9", "sse:broadcast")
    async with aiohttp.ClientSession() as http:
        await post_json(http, f"{process.url}/chatbot/api/sessions", {"session_name": "leaver"}, 201)
        assert await numsub(redis, *channels) == dict.fromkeys(channels, 0)
        async with (
            open_stream(http, f"{process.url}/chatbot/api/sessions/leaver/events"),
            open_stream(http, f"{process.url}/workbench/api/agents/a9/events"),
        ):
            assert await numsub(redis, *channels) == dict.fromkeys(channels, 1)
            assert (await health(http, process.url))["streams"] == 2
        # Leaving the blocks closed both client connections mid-stream.
        started = time.monotonic()
        after = await wait_for(lambda: numsub(redis, *channels), dict.fromkeys(channels, 0), 3.0)
        elapsed = time.monotonic() - started
        assert after == dict.fromkeys(channels, 0), after
        logger.info("subscriptions released %.2f s after the client left", elapsed)
        streams = await wait_for(
            lambda: _streams(http, process.url), 0, 3.0
        )
        assert streams == 0, streams


async def _streams(http: aiohttp.ClientSession, base: str) -> int:
    return int((await health(http, base))["streams"])


# --- 6. 1,000 streams, one pub/sub connection ------------------------------------------------


async def open_raw_stream(http: aiohttp.ClientSession, url: str) -> tuple[SSEStream, SSEEvent]:
    """An SSE stream held open until its response is closed; waits for ``connected``."""
    response = await http.get(url, timeout=aiohttp.ClientTimeout(total=None))
    try:
        assert response.status == 200, (url, response.status, await response.text())
        stream = SSEStream(response)
        connected = await stream.next(10.0)
        assert connected.type == "connected", connected
    except BaseException:
        response.close()
        raise
    return stream, connected


async def gather_batches(
    factories: list[Callable[[], Awaitable[Any]]], batch: int, timeout: float
) -> list[Any]:
    """Run the coroutines ``batch`` at a time, each batch bounded by ``timeout``."""
    results: list[Any] = []
    for start in range(0, len(factories), batch):
        async with asyncio.timeout(timeout):
            results.extend(
                await asyncio.gather(*(make() for make in factories[start:start + batch]))
            )
    return results


def _raise_open_file_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def test_thousand_streams_share_one_pubsub_connection(
    server_process: StartServer, redis_url: str
) -> None:
    """1,000 open streams on one process hold exactly one Redis pub/sub connection.

    Layout: 400 sessions x 2 streams (one through /chatbot, one through /workbench) plus
    200 agent streams = 1,000 streams on 1,001 channels (400 session, 400 presence: the
    customer streams' silent subscription that says the customer is connected, 200 agent,
    broadcast).
    Measured (2 CPUs, 20 runs): 1,000 streams open in 0.4-0.7 s; exactly 1 connection with
    subscriptions (sub=1001; 601 before presence); the server process held 64 Redis connections in all, i.e. its
    whole BlockingConnectionPool (POOL_SIZE=64, the pub/sub connection included), saturated
    by opening 100 streams at a time. Logged per run (logger tests.test_processes, INFO).
    """
    # Client and server each hold one socket per stream; the server inherits this limit.
    limit = _raise_open_file_limit(2 * STREAM_COUNT + 512)
    assert limit >= 2 * STREAM_COUNT + 512, limit
    process = server_process("--redis-url", redis_url, env=REDIS_ON)
    probe = Redis.from_url(redis_url, decode_responses=True, client_name=PROBE_NAME)
    sessions = [f"load-{i:03d}" for i in range(400)]
    agents = [f"agent-{i:03d}" for i in range(200)]
    base = process.url
    streams: list[tuple[SSEStream, SSEEvent]] = []
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            try:
                await gather_batches(
                    [
                        (lambda n=n: post_json(
                            http, f"{base}/chatbot/api/sessions", {"session_name": n}, 201
                        ))
                        for n in sessions
                    ],
                    batch=100, timeout=20,
                )
                urls = [
                    f"{base}/{side}/api/sessions/{n}/events"
                    for n in sessions for side in ("chatbot", "workbench")
                ] + [f"{base}/workbench/api/agents/{a}/events" for a in agents]
                assert len(urls) == STREAM_COUNT
                opened = time.monotonic()
                # Appended as each batch completes, so a failure still closes what was opened.
                for start in range(0, len(urls), 100):
                    async with asyncio.timeout(20):
                        streams.extend(await asyncio.gather(
                            *(open_raw_stream(http, url) for url in urls[start:start + 100])
                        ))
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
                    len(streams), open_time, len(clients), len(server_clients),
                    len(subscribers), [c.get("sub") for c in subscribers],
                )
                assert len(subscribers) == 1, subscribers
                assert int(subscribers[0]["sub"]) == expected_channels, subscribers[0]
                assert len(server_clients) <= POOL_SIZE + 1, len(server_clients)

                sample = sessions[::40]
                sample_channels = [f"sse:session:{n}" for n in sample] + [
                    f"sse:agent:{a}" for a in agents[::40]
                ] + ["sse:broadcast"]
                assert await numsub(probe, *sample_channels) == dict.fromkeys(sample_channels, 1)

                # A chat message reaches both streams of each sampled session.
                by_url = dict(zip(urls, streams, strict=True))
                for n in sample:
                    content = f"load message for {n}"
                    await post_json(
                        http, f"{base}/chatbot/api/chat", {"session_name": n, "content": content}
                    )
                    for side in ("chatbot", "workbench"):
                        stream, _ = by_url[f"{base}/{side}/api/sessions/{n}/events"]
                        said, _bot = await stream.take(2)
                        check_message(said, n, "customer", "ai_chatbot", content)

                # One broadcast reaches all 200 agent streams.
                await post_json(
                    http, f"{base}/chatbot/api/manual/escalate", {"session_name": sessions[-1]}
                )
                agent_streams = [
                    by_url[f"{base}/workbench/api/agents/{a}/events"][0] for a in agents
                ]
                async with asyncio.timeout(15):
                    received = await asyncio.gather(*(s.take(1, 10) for s in agent_streams))
                for [event] in received:
                    assert event.type == "transfer_request", event
                    assert event.payload["session_name"] == sessions[-1], event
            finally:
                for stream, _ in streams:
                    stream.response.close()

            # Everything closed: every channel unsubscribed and no stream left open.
            remaining = await wait_for(lambda: probe.pubsub_channels("sse:*"), [], 10.0)
            assert remaining == [], remaining[:10]
            assert await numsub(probe, *sample_channels) == dict.fromkeys(sample_channels, 0)
            assert await wait_for(lambda: _streams(http, base), 0, 10.0) == 0
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
    process = server_process(*args, env=REDIS_ON)
    base = process.url
    rounds = 40
    async with aiohttp.ClientSession() as http:
        await post_json(http, f"{base}/chatbot/api/sessions", {"session_name": "held"}, 201)
        await post_json(
            http, f"{base}/workbench/api/sessions/held/takeover", {"agent_id": "a1"}
        )
        await gather_batches(
            [
                (lambda i=i: post_json(
                    http, f"{base}/chatbot/api/sessions", {"session_name": f"q{i}"}, 201
                ))
                for i in range(rounds)
            ],
            batch=20, timeout=10,
        )
        async with open_stream(http, f"{base}/workbench/api/agents/a1/events") as (
            stream, connected
        ):
            for i in range(rounds):
                # One event on sse:agent:a1 (a customer message to the session a1 holds) and
                # one on sse:broadcast (a transfer request), published concurrently.
                async with asyncio.timeout(5):
                    await asyncio.gather(
                        post_json(
                            http, f"{base}/chatbot/api/chat",
                            {"session_name": "held", "content": f"message {i}"},
                        ),
                        post_json(
                            http, f"{base}/chatbot/api/manual/escalate", {"session_name": f"q{i}"}
                        ),
                    )
            events = await stream.take(2 * rounds, timeout=10)
    assert sorted(event.type for event in events) == sorted(
        ["new_message"] * rounds + ["transfer_request"] * rounds
    )
    check_ids([connected, *events])
