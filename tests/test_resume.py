"""Resumable streams (delivery-guarantees issue, part 2-4): Last-Event-ID, history, slow
consumers and restarts, tested end to end.

Real parts only: the real app behind aiohttp's TestClient (memory and Redis), real ``run.py``
processes on the suite's real redis-server, and real HTTP clients reading the SSE wire format
(``id:``, ``data:`` and ``retry:`` lines) on 127.0.0.1. Nothing is mocked.

What these tests prove: a client that reconnects with ``Last-Event-ID`` (header or
``?last_event_id=``) gets exactly the events it missed (ids, types, payloads and order, no
duplicates) and then the live ones, on session streams and on agent streams (two channels merged
in publish order), on the same process or another one; the header beats the query string; a
resume older than the history says ``recovered: false`` and sends what is left; a malformed or
future id starts a normal stream; a slow client is cut off (with a ``retry:`` hint) without
slowing a fast one and then resumes without loss; and an EventSource-like reader loses nothing
across a server restart.
"""

import asyncio
import logging
import time
from contextlib import suppress
from urllib.parse import quote

import aiohttp
import pytest
from redis.asyncio import Redis

from app.process.settings import Settings
from realtime import ids
from tests.support.api import (
    CHATBOT,
    act,
    agent_events,
    agent_say,
    chat,
    create,
    escalate,
    every_page,
    post_until_served,
    session_events,
    streams_open,
)
from tests.support.app_server import AppClient, MakeClient
from tests.support.checks import check_strictly_increasing, wire
from tests.support.processes import REDIS_ON, ServerProcess, StartServer
from tests.support.readers import ReconnectingReader
from tests.support.sse import AMBIENT, SSEEvent, SSEStream, open_stream
from tests.support.wait import gather_in_batches, wait_for

logger = logging.getLogger(__name__)


QUIET = 0.3


def resume_request(url: str, last_id: str, form: str) -> tuple[str, dict[str, str] | None]:
    """The URL and headers of a resume from ``last_id`` in ``form`` ("header" or "query")."""
    if form == "header":
        return url, {"Last-Event-ID": last_id}
    return f"{url}?last_event_id={quote(last_id, safe='')}", None


# --- 1. session streams --------------------------------------------------------------------


@pytest.mark.parametrize("form", ["header", "query"])
async def test_session_stream_resumes_with_exactly_the_missed_events(client: AppClient, form: str) -> None:
    """A session stream resumed from the last id seen gets exactly the missed events (as a
    stream that stayed open saw them), no duplicates, then live ones; recovered is True."""
    name = f"resume-{form}"
    await create(client, name)
    async with open_stream(client, session_events(name)) as (watch, _):
        async with open_stream(client, session_events(name)) as (stream, connected):
            assert connected.payload["recovered"] is True, connected
            await chat(client, name, "hello")
            seen = await stream.take(2)
        # Disconnected: a whole handoff happens meanwhile.
        await chat(client, name, "what are your opening hours?")
        await escalate(client, name)
        await act(client, name, "takeover", "agent-1")
        await agent_say(client, name, "agent-1", "Hi, I am Ann from support")
        await chat(client, name, "thanks Ann")
        everything = await watch.take(2 + 7)
        assert wire(everything[:2]) == wire(seen)
        missed = everything[2:]
        assert [e.type for e in missed] == [
            "new_message",
            "new_message",
            "status_change",
            "agent_joined",
            "status_change",
            "new_message",
            "new_message",
        ], wire(missed)

        last = seen[-1].id
        assert last is not None
        url, headers = resume_request(session_events(name), last, form)
        async with open_stream(client, url, headers=headers) as (resumed, again):
            assert again.payload["recovered"] is True, again
            assert again.id == last, (again.id, last)
            assert again.payload["session_name"] == name, again
            replay = await resumed.take(len(missed))
            assert wire(replay) == wire(missed)
            await resumed.assert_quiet(QUIET)  # nothing twice

            await agent_say(client, name, "agent-1", "still with me?")
            live, watched = await resumed.take(1), await watch.take(1)
            assert wire(live) == wire(watched)
            check_strictly_increasing(last, [*replay, *live])


async def test_resume_after_seeing_only_connected(client: AppClient) -> None:
    """A client that saw only ``connected`` resumes from its id and misses nothing."""
    name = "only-connected"
    await create(client, name)
    async with open_stream(client, session_events(name)) as (watch, _):
        async with open_stream(client, session_events(name)) as (_, connected):
            position = connected.id
            assert position is not None and ids.is_event_id(position), connected
        await chat(client, name, "hello")
        await escalate(client, name)
        missed = await watch.take(3)
        headers = {"Last-Event-ID": position}
        async with open_stream(client, session_events(name), headers=headers) as (resumed, again):
            assert again.payload["recovered"] is True, again
            assert again.id == position, (again.id, position)
            replay = await resumed.take(3)
            assert wire(replay) == wire(missed)
            check_strictly_increasing(position, replay)
            await resumed.assert_quiet(QUIET)


# --- 2. agent streams: two channels ---------------------------------------------------------


async def test_agent_stream_resumes_both_channels_in_publish_order(client: AppClient) -> None:
    """An agent stream (its channel + broadcast) resumed gets the missed events of both
    channels merged in publish order, ids strictly increasing, then live ones."""
    agent = "agent-r"
    for name in ("held", "queued", "other", "late"):
        await create(client, name)
    async with open_stream(client, agent_events(agent)) as (watch, _):
        async with open_stream(client, agent_events(agent)) as (stream, connected):
            assert connected.payload["recovered"] is True, connected
            await escalate(client, "held")
            [seen] = await stream.take(1)
            assert seen.type == "transfer_request", seen
        await act(client, "held", "takeover", agent)  # broadcast status_change
        await chat(client, "held", "are you there?")  # agent channel new_message
        await escalate(client, "queued")  # broadcast transfer_request
        await chat(client, "held", "my order is late")  # agent channel new_message
        await act(client, "other", "takeover", "agent-x")  # broadcast status_change
        await chat(client, "other", "for agent-x only")  # agent-x's channel: not ours
        await act(client, "held", "release", agent)  # broadcast status_change
        everything = await watch.take(1 + 6)
        assert wire(everything[:1]) == wire([seen])
        missed = everything[1:]
        assert [e.type for e in missed] == [
            "status_change",
            "new_message",
            "transfer_request",
            "new_message",
            "status_change",
            "status_change",
        ], wire(missed)
        assert seen.id is not None
        headers = {"Last-Event-ID": seen.id}
        async with open_stream(client, agent_events(agent), headers=headers) as (resumed, again):
            assert again.payload["recovered"] is True, again
            assert again.id == seen.id, (again.id, seen.id)
            replay = await resumed.take(len(missed))
            assert wire(replay) == wire(missed)
            check_strictly_increasing(seen.id, replay)
            await resumed.assert_quiet(QUIET)
            await escalate(client, "late")
            live, watched = await resumed.take(1), await watch.take(1)
            assert wire(live) == wire(watched) and live[0].type == "transfer_request"
            check_strictly_increasing(seen.id, [*replay, *live])


# --- 3. header over query -------------------------------------------------------------------


async def test_header_wins_over_query(client: AppClient) -> None:
    """With both given, the Last-Event-ID header (newer, sent by EventSource on a reconnect)
    wins over the ?last_event_id= the page once built."""
    name = "header-wins"
    await create(client, name)
    async with open_stream(client, session_events(name)) as (watch, connected):
        assert connected.id is not None
        await chat(client, name, "hello")
        first = await watch.take(2)
        await escalate(client, name)
        [third] = await watch.take(1)
        newer = first[-1].id
        assert newer is not None
        url = f"{session_events(name)}?last_event_id={connected.id}"
        async with open_stream(client, url, headers={"Last-Event-ID": newer}) as (resumed, again):
            assert again.id == newer, (again.id, newer)
            assert again.payload["recovered"] is True, again
            assert wire(await resumed.take(1)) == wire([third])
            await resumed.assert_quiet(QUIET)


# --- 4. history too short --------------------------------------------------------------------


async def test_resume_older_than_the_history(
    make_client: MakeClient, settings: Settings, backend: str
) -> None:
    """A resume from an id the history no longer holds says recovered: false and sends what is
    left of the history, then live events; a resume inside the window is complete."""
    client: AppClient = await make_client(settings, history_size=10)
    name, agent, count = "short-history", "agent-h", 400
    await create(client, name)
    await act(client, name, "takeover", agent)
    async with open_stream(client, session_events(name)) as (watch, _):
        async with open_stream(client, session_events(name)) as (_, connected):
            position = connected.id
        assert position is not None
        async with asyncio.timeout(30):
            await gather_in_batches(
                [
                    (lambda i=i: agent_say(client, name, agent, f"m{i}"))  # type: ignore[misc]  # python/mypy#15459: the default binds the loop variable
                    for i in range(count)
                ],
                batch=25,
                timeout=30,
            )
        published = await watch.take(count, timeout=15)

        async with open_stream(client, session_events(name), headers={"Last-Event-ID": position}) as (
            resumed,
            again,
        ):
            assert again.payload["recovered"] is False, again
            left = await resumed.drain(0.5, limit=count, timeout=15)
            assert left, "nothing of the history arrived"
            assert wire(left) == wire(published[-len(left) :]), "not the tail of the history"
            if backend == "memory":
                assert len(left) == 10, len(left)
            else:
                # MAXLEN ~ trims in whole nodes: what is left is what the stream still holds.
                redis = Redis.from_url(settings.redis_url)
                try:
                    kept = await redis.xlen(f"history:sse:session:{name}")
                finally:
                    await redis.aclose()
                assert len(left) == kept, (len(left), kept)
                assert 10 <= len(left) < count, len(left)
            await agent_say(client, name, agent, "live after the gap")
            live, watched = await resumed.take(1), await watch.take(1)
            assert wire(live) == wire(watched)
            check_strictly_increasing(position, [*left, *live])

        # A position still inside what is left resumes completely.
        inside = left[-3].id
        assert inside is not None
        async with open_stream(client, session_events(name), headers={"Last-Event-ID": inside}) as (
            resumed,
            again,
        ):
            assert again.payload["recovered"] is True, again
            assert wire(await resumed.take(3)) == wire([*left[-2:], *live])
            await resumed.assert_quiet(QUIET)
    logger.info("%s: %d of %d events left in a history of size 10", backend, len(left), count)


# --- 5. malformed and future ids -------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "value"),
    [
        ("header", "garbage"),
        ("header", "99999999999999-0"),
        ("header", "99999999999999999999-99999999999999999999"),
        ("query", "garbage"),
        ("query", "99999999999999-0"),
        ("query", "①-1"),
        ("query", "1-2-3"),
        ("query", "123456789012345678901-0"),
    ],
)
async def test_malformed_or_future_last_event_id(client: AppClient, form: str, value: str) -> None:
    """A Last-Event-ID the server never gave out starts a normal stream with recovered: false
    (no error, no replay of old history), and live events arrive."""
    name = "bad-id"
    await create(client, name)
    await chat(client, name, "published before the stream opened")
    url, headers = resume_request(session_events(name), value, form)
    async with open_stream(client, url, headers=headers) as (stream, connected):
        assert connected.payload["recovered"] is False, connected
        assert connected.id is not None and ids.is_event_id(connected.id), connected
        assert connected.id != value
        await stream.assert_quiet(QUIET)  # the older history is not replayed
        await chat(client, name, "hello again")
        live = await stream.take(2)
        assert live[0].payload["message"]["content"] == "hello again", wire(live)
        check_strictly_increasing(connected.id, live)


# --- 6. across processes ---------------------------------------------------------------------


async def test_resume_on_the_other_process(server_process: StartServer, redis_url: str) -> None:
    """A client streaming on the workbench process resumes on the chatbot process (same Redis)
    with Last-Event-ID and gets exactly the events it missed."""
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    name, bot = "cross-resume", chatbot.url
    async with aiohttp.ClientSession() as http:
        await create(http, name, base=bot)
        async with open_stream(http, bot + session_events(name)) as (watch, _):
            url = workbench.url + session_events(name, "workbench")
            async with open_stream(http, url) as (stream, _):
                await chat(http, name, "hello", base=bot)
                seen = await stream.take(2)
            await chat(http, name, "what are your opening hours?", base=bot)
            await escalate(http, name, base=bot)
            await chat(http, name, "still waiting", base=bot)
            everything = await watch.take(2 + 4)
            assert wire(everything[:2]) == wire(seen)
            missed = everything[2:]
            last = seen[-1].id
            assert last is not None
            headers = {"Last-Event-ID": last}
            async with open_stream(http, bot + session_events(name), headers=headers) as (resumed, again):
                assert again.payload["recovered"] is True, again
                assert again.id == last, (again.id, last)
                replay = await resumed.take(len(missed))
                assert wire(replay) == wire(missed)
                await resumed.assert_quiet(QUIET)
                await chat(http, name, "anyone?", base=bot)
                live, watched = await resumed.take(1), await watch.take(1)
                assert wire(live) == wire(watched)
                check_strictly_increasing(last, [*replay, *live])


# --- 7. slow consumer ------------------------------------------------------------------------


def message_seq(event: SSEEvent) -> int:
    return int(event.payload["message"]["content"][:5])


async def test_slow_consumer_is_cut_off_and_resumes(server_process: StartServer, redis_url: str) -> None:
    """A client that stops reading is cut off (retry hint, then EOF) while a fast client on the
    same session gets every event; the slow one then resumes and misses nothing."""
    process = server_process("--redis-url", redis_url, "--queue-size", "20", env=REDIS_ON)
    base, name, agent = process.url, "slow-and-fast", "agent-s"
    # 4,000 characters with the "NNNNN:" prefix, 4 bytes each in UTF-8 (16 kB an event), so the
    # kernel's socket buffers (about 5 MB on loopback) fill after a few hundred events.
    filler = "\U0001f600" * 3994
    batch, max_events = 20, 700
    sent: dict[int, float] = {}
    received: dict[int, float] = {}

    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as slow_http:
        await create(http, name, base=base)
        await act(http, name, "takeover", agent, base=base)
        url = base + session_events(name)
        async with (
            open_stream(http, url) as (fast, _),
            slow_http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as slow_response,
        ):
            slow = SSEStream(slow_response)
            slow_connected = await slow.next()
            assert slow_connected.type == "connected", slow_connected
            assert await streams_open(http, base) == 2
            fast_events: list[SSEEvent] = []

            async def read_fast(count: int) -> None:
                while len(fast_events) < count:
                    event = await fast.next(10)
                    if event.type in AMBIENT:
                        continue
                    fast_events.append(event)
                    received[message_seq(event)] = time.monotonic()

            # Publish in batches until the server has cut the slow client off (its log says
            # so), then one batch more; the fast client reads all along.
            published = 0
            reader = asyncio.create_task(read_fast(max_events))
            try:
                async with asyncio.timeout(40):
                    while published < max_events:
                        for i in range(published, published + batch):
                            sent[i] = time.monotonic()
                            await agent_say(http, name, agent, f"{i:05d}:{filler}", base=base)
                        published += batch
                        if "slow consumer cut off" in process.log():
                            for i in range(published, published + batch):
                                sent[i] = time.monotonic()
                                await agent_say(http, name, agent, f"{i:05d}:{filler}", base=base)
                            published += batch
                            break
                    async with asyncio.timeout(10):
                        while len(fast_events) < published and not reader.done():
                            await asyncio.sleep(0.02)
            finally:
                reader.cancel()
                with suppress(asyncio.CancelledError):
                    await reader
            assert "slow consumer cut off" in process.log(), (
                f"no cut-off after {published} events of 4,000 characters"
            )
            assert [message_seq(e) for e in fast_events] == list(range(published))
            latencies = [received[i] - sent[i] for i in range(published)]

            # The slow client reads now: what was buffered, a retry hint, then the end.
            slow_events: list[SSEEvent] = []
            with pytest.raises(EOFError):
                async with asyncio.timeout(20):
                    for _ in range(published + 2):
                        event = await slow.next(10)
                        if event.type not in AMBIENT:
                            slow_events.append(event)
            assert slow.retry_ms is not None and 0 < slow.retry_ms <= 60_000, slow.trail[-3:]
            assert slow.trail[-1].startswith("retry "), slow.trail[-3:]
            got = [message_seq(e) for e in slow_events]
            assert got == list(range(len(got))), "the slow client's events are not a prefix"
            assert len(got) < published
            assert wire(slow_events) == wire(fast_events[: len(slow_events)])
            assert await wait_for(lambda: streams_open(http, base), 1, timeout=5) == 1

            logger.info(
                "slow consumer: %d events of 4,000 characters (16 kB) published; fast client "
                "max latency %.1f ms (median %.1f ms); slow client read %d before the cut-off",
                published,
                max(latencies) * 1000,
                sorted(latencies)[len(latencies) // 2] * 1000,
                len(slow_events),
            )

        # It resumes from the last id it actually read and gets everything it missed.
        last = slow.last_event_id
        assert last is not None
        missed = published - len(slow_events)
        async with open_stream(slow_http, url, headers={"Last-Event-ID": last}) as (resumed, again):
            assert again.payload["recovered"] is True, again
            rest = await resumed.take(missed, timeout=10)
            assert wire(rest) == wire(fast_events[len(slow_events) :])
            await resumed.assert_quiet(QUIET)
    logger.info("slow consumer: %d events received after resuming", len(rest))


async def test_resume_of_more_events_than_the_queue_holds(
    make_client: MakeClient, settings: Settings
) -> None:
    """A resume whose missed events outnumber the stream's queue (but not the history) still
    gets all of them: the replay is not a slow consumer."""
    client: AppClient = await make_client(settings, queue_size=20)
    name, agent, count = "long-replay", "agent-q", 60
    await create(client, name)
    await act(client, name, "takeover", agent)
    async with open_stream(client, session_events(name)) as (_, connected):
        position = connected.id
    assert position is not None
    for i in range(count):
        await agent_say(client, name, agent, f"m{i}")
    headers = {"Last-Event-ID": position}
    async with open_stream(client, session_events(name), headers=headers) as (resumed, again):
        assert again.payload["recovered"] is True, again
        replay = await resumed.take(count)
        assert [e.payload["message"]["content"] for e in replay] == [f"m{i}" for i in range(count)]
        check_strictly_increasing(position, replay)


# --- 8. an EventSource-like reader across a server restart -----------------------------------


def restart(process: ServerProcess) -> tuple[int | None, float]:
    """SIGTERM the process and start it again on the same port; its exit status and the
    time the restart took."""
    started = time.monotonic()
    status = process.stop()
    process.start()
    return status, time.monotonic() - started


async def test_eventsource_reader_loses_nothing_across_a_server_restart(
    server_process: StartServer, redis_url: str
) -> None:
    """An EventSource-like reader (retry hints, Last-Event-ID) gets every message of a sequence
    exactly once, in order, while the server process is restarted mid-sequence."""
    process = server_process("--redis-url", redis_url, "--heartbeat", "1", env=REDIS_ON)
    base, name, count, restart_after = process.url, "restarted", 60, 20
    expected = [f"sequence {i:03d}" for i in range(count)]
    # A new connection per POST, so a retried request can never have been served already on a
    # keep-alive connection the server was closing.
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession() as stream_http,
        aiohttp.ClientSession(connector=connector) as post_http,
    ):
        await create(post_http, name, base=base)
        reader = ReconnectingReader(stream_http, base + session_events(name))
        reading = asyncio.create_task(reader.run())
        restarting: asyncio.Task[tuple[int | None, float]] | None = None
        try:
            async with asyncio.timeout(40):
                while not reader.connected:
                    await asyncio.sleep(0.02)
                for i, content in enumerate(expected):
                    if i == restart_after:
                        restarting = asyncio.create_task(asyncio.to_thread(restart, process))
                    body = {"session_name": name, "content": content}
                    await post_until_served(
                        post_http, f"{base}{CHATBOT}/chat", body, timeout=20.0, while_away=True
                    )
                    if i % 3 == 2:
                        await asyncio.sleep(0.1)
                assert restarting is not None
                status, took = await restarting
                assert status == 0, process.log()
                # 120 messages: more than a default page (100).
                pages = await every_page(post_http, f"{base}{CHATBOT}/sessions/{name}/messages")
                messages = [m for page in pages for m in page["messages"]]
                last_id = messages[-1]["id"]
                while last_id not in {m["id"] for m in reader.messages()} and not reading.done():
                    await asyncio.sleep(0.05)
                await asyncio.sleep(QUIET)  # room for a duplicate to show
        finally:
            reading.cancel()
            with suppress(asyncio.CancelledError):
                await reading
            if restarting is not None and not restarting.done():
                with suppress(Exception):
                    await restarting

    customer = [m["content"] for m in messages if m["role"] == "customer"]
    assert customer == expected, "the transcript does not hold the sequence exactly once"
    assert len(messages) == 2 * count, [m["role"] for m in messages]
    seen = reader.messages()
    assert [m["id"] for m in seen] == [m["id"] for m in messages], (
        f"reader saw {len(seen)} messages, transcript has {len(messages)}"
    )
    assert [m["content"] for m in seen] == [m["content"] for m in messages]
    first_id = reader.connected[0][1].id
    assert first_id is not None
    check_strictly_increasing(first_id, reader.events)
    # It reconnected at least once (the restart), each time resuming from where it was.
    assert len(reader.connected) >= 2, reader.endings
    assert reader.hints, "the server ended the stream without a retry: hint"
    for sent, connected in reader.connected[1:]:
        assert connected.id == sent, (connected.id, sent)
        assert connected.payload["recovered"] is True, connected
    logger.info(
        "restart took %.2f s; reader: %d connections, endings %s, retry hints %s ms, "
        "events per connection %s (+%d on the last)",
        took,
        len(reader.connected),
        reader.endings,
        reader.hints,
        reader.per_connection,
        len(reader.events) - sum(reader.per_connection),
    )
