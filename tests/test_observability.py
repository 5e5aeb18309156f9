"""Observability (metrics and logs), tested on the real app (memory and Redis) and on real
``run.py`` processes, nothing mocked.

What these tests prove: ``GET /metrics`` answers the Prometheus text format, which
prometheus-client's own parser reads; after a scripted handoff (session, chat, escalate,
takeover with a session stream and an agent stream open, agent message, a resumed stream that
replays N events, a slow consumer cut off) the counters move by exactly the expected amounts:
open streams per sub-app (and back after the streams close), events published and delivered by
type, replayed events, slow-consumer drops, the broker mode, Redis reconnects, the request
latency histogram by route template, and the publish→delivery histogram. Logs: one line per
request (method, path without query, status), a line per stream open and close, the request id
(X-Request-ID, accepted or generated) in each line of a request, in the response header and in
error bodies; ``--log-format json`` makes every line of a process a JSON object; no token and
no message content appears at INFO; ``--log-format nope`` is refused with exit status 2.

Every wait is bounded; every socket is on 127.0.0.1.
"""

import asyncio
import json
import logging
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack, suppress
from typing import Any

import aiohttp
import pytest
import yarl
from prometheus_client.parser import text_string_to_metric_families

from app.domain.auth import TokenAuthority
from app.keys import BACKENDS
from app.process.logs import TEXT_FORMAT, JsonFormatter, RequestIdFilter
from app.process.settings import Settings
from realtime.channels import session_channel
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    agent_events,
    bearer,
    call,
    exchange,
    session_events,
)
from tests.support.app_server import AppClient, MakeClient
from tests.support.metrics import Samples, by_label, parse_metrics, scrape, value
from tests.support.processes import StartServer, clean_env, free_port
from tests.support.sse import SSEEvent, SSEStream, open_stream
from tests.support.wait import until

logger = logging.getLogger(__name__)

SECRET = "observability-test-secret-0123456789-abcdef"  # 43 characters
AGENT = "alice"
# Bounded waits.
REQUEST_DEADLINE = 5.0
SETTLE_DEADLINE = 5.0
# The slow consumer: its events are 4,000 characters of 4-byte UTF-8 (16 kB each), and it reads
# nothing through a socket with a small receive buffer, so the server's socket fills after a
# few events and the stream's queue (SLOW_QUEUE events) after a few more.
SLOW_QUEUE = 4
SLOW_FILLER = "\U0001f600" * 3990
SLOW_BATCH = 5
SLOW_MAX_CHATS = 200
SLOW_DEADLINE = 15.0
GENERATED_ID = re.compile(r"[0-9a-f]{16}\Z")
REQUEST_LOGGER = "app.web.middlewares"
STREAM_LOGGER = "handlers.sse"


# --- requests ----------------------------------------------------------------------------------


# --- metrics -----------------------------------------------------------------------------------


async def settle(
    http: AppClient | aiohttp.ClientSession,
    check: Callable[[Samples], bool],
    what: str,
    base: str = "",
    deadline: float = SETTLE_DEADLINE,
) -> Samples:
    """Scrape until ``check`` holds (bounded); the last scrape."""
    return await until(
        lambda: scrape(http, base),
        check,
        timeout=deadline,
        what=what,
        describe=lambda samples: interesting(samples or {}),
    )


def interesting(samples: Samples) -> dict[str, float]:
    return {
        f"{name}{dict(labels)}": number
        for (name, labels), number in samples.items()
        if name.startswith("switchboard_")
        and "_bucket" not in name
        and not name.startswith("switchboard_request_duration")
    }


def streams_open(samples: Samples) -> dict[str, float]:
    """Open streams by sub-app; a sub-app without a series counts as 0 here (see
    test_streams_open_exports_zero_for_each_served_subapp for the absent series)."""
    found = by_label(samples, "switchboard_streams_open", "component")
    return {c: found.get(c, 0.0) for c in ("chatbot", "workbench")}


def latency_count(samples: Samples) -> float:
    return value(samples, "switchboard_publish_to_delivery_seconds_count") or 0.0


def request_count(samples: Samples, method: str, route: str, status: int) -> float:
    return (
        value(
            samples,
            "switchboard_request_duration_seconds_count",
            method=method,
            route=route,
            status=str(status),
        )
        or 0.0
    )


# --- a client that stops reading -----------------------------------------------------------------


class StalledStream:
    """An SSE request on a raw socket with a small receive buffer and segment size, read only
    up to its ``connected`` event and then left alone until ``drain``: the server's writes back
    up quickly, as with a client on a slow link."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""

    @classmethod
    async def open(cls, port: int, path: str) -> "StalledStream":
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        stalled = cls(sock)
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                await loop.sock_connect(sock, ("127.0.0.1", port))
                request = (
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
                )
                await loop.sock_sendall(sock, request.encode())
                while b'"connected"' not in stalled.received:
                    chunk = await loop.sock_recv(sock, 1024)
                    assert chunk, f"stream ended before connected: {stalled.received!r}"
                    stalled.received += chunk
        except BaseException:
            sock.close()
            raise
        assert stalled.received.startswith(b"HTTP/1.1 200"), stalled.received[:200]
        return stalled

    async def drain(self, deadline: float = 10.0, limit: int = 64 * 1024 * 1024) -> bytes:
        """Read everything up to the end of the connection (bounded in time and size)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(deadline):
            while len(self.received) < limit:
                chunk = await loop.sock_recv(self.sock, 256 * 1024)
                if not chunk:
                    break
                self.received += chunk
        return self.received

    def close(self) -> None:
        self.sock.close()


# --- logs --------------------------------------------------------------------------------------


def capture_logs(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> None:
    """Records of every logger at ``level``, each with the request id its line would carry
    (the filter that configure_logging puts on its handler), minus aiohttp's access log, which
    the test server writes and run.py switches off (access_log=None)."""
    caplog.set_level(logging.WARNING, logger="aiohttp.access")
    caplog.set_level(level)  # after: set_level also sets the capturing handler's level
    caplog.handler.addFilter(RequestIdFilter())


def request_lines(records: Iterable[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == REQUEST_LOGGER and hasattr(r, "status")]


def stream_lines(records: Iterable[logging.LogRecord], state: str) -> list[logging.LogRecord]:
    return [r for r in records if r.name == STREAM_LOGGER and getattr(r, "stream", None) == state]


def logged_field(record: logging.LogRecord, field: str) -> Any:
    """A field the app logged with ``extra=``, which logging sets on the record."""
    return record.__dict__[field]


def formatted(record: logging.LogRecord) -> list[str]:
    """The record as both formats would write it (the text line with its extras appended)."""
    text = logging.Formatter(TEXT_FORMAT).format(record)
    return [text, JsonFormatter().format(record)]


async def wait_for_records(
    caplog: pytest.LogCaptureFixture, check: Callable[[list[logging.LogRecord]], bool], what: str
) -> list[logging.LogRecord]:
    await until(
        lambda: caplog.records,
        check,
        timeout=SETTLE_DEADLINE,
        interval=0.02,
        what=f"{what}: not logged",
        describe=lambda records: len(records or []),
    )
    return list(caplog.records)


# --- 1. /metrics -------------------------------------------------------------------------------


async def test_metrics_endpoint_speaks_prometheus(
    make_client: MakeClient, settings: Settings, backend: str
) -> None:
    """200 in the Prometheus text format, parsed by prometheus-client; every metric of the
    issue is there with its type; the broker mode says memory or redis; Redis reconnects count
    the first connection; nothing has been published, delivered or dropped yet."""
    client = await make_client(settings)
    async with client.get("/metrics", headers={"X-Request-ID": "scrape-1"}) as response:
        assert response.status == 200
        assert response.headers["X-Request-ID"] == "scrape-1"
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    for name, kind in {
        "switchboard_streams_open": "gauge",
        "switchboard_events_published": "counter",
        "switchboard_events_delivered": "counter",
        "switchboard_events_dropped": "counter",
        "switchboard_events_replayed": "counter",
        "switchboard_slow_consumer_disconnects": "counter",
        "switchboard_redis_reconnects": "counter",
        "switchboard_connections_timed_out": "counter",
        "switchboard_broker_mode": "gauge",
        "switchboard_request_duration_seconds": "histogram",
        "switchboard_publish_to_delivery_seconds": "histogram",
        "switchboard_starts_refused": "counter",
    }.items():
        assert types.get(name) == kind, (name, types)
    samples = parse_metrics(text)
    modes = by_label(samples, "switchboard_broker_mode", "mode")
    assert modes[backend] == 1 and sum(modes.values()) == 1, modes
    reconnects = value(samples, "switchboard_redis_reconnects_total")
    if backend == "redis":
        assert reconnects is not None and reconnects >= 1, reconnects
    else:
        assert reconnects == 0
    assert value(samples, "switchboard_degraded") == 0
    assert by_label(samples, "switchboard_events_published_total", "type") == {}
    assert by_label(samples, "switchboard_events_delivered_total", "type") == {}
    assert value(samples, "switchboard_events_replayed_total") == 0
    assert value(samples, "switchboard_slow_consumer_disconnects_total") == 0
    assert by_label(samples, "switchboard_events_dropped_total", "reason") == {"malformed": 0}
    assert value(samples, "switchboard_stream_gaps_total") == 0
    timed_out = by_label(samples, "switchboard_connections_timed_out_total", "stage")
    assert timed_out == {"idle": 0, "head": 0, "body": 0}, timed_out
    assert by_label(samples, "switchboard_starts_refused_total", "kind") == {"start": 0, "escalation": 0}
    assert by_label(samples, "switchboard_escalations_refused_total", "reason") == {"queue_full": 0}
    assert value(samples, "switchboard_sessions_closed_idle_total") == 0
    assert value(samples, "switchboard_sessions_expired_total") == 0
    assert latency_count(samples) == 0
    assert streams_open(samples) == {"chatbot": 0, "workbench": 0}
    # A scrape is observed once it is answered: the first one is in the second.
    again = await scrape(client)
    assert request_count(again, "GET", "/metrics", 200) == 1


async def test_streams_open_exports_zero_for_each_served_subapp(
    make_client: MakeClient, settings: Settings
) -> None:
    """``switchboard_streams_open{component}`` reads 0 for every sub-app the process serves
    while none of its streams is open (at start, and after they close), and has no series for
    a sub-app it does not serve: a gauge that vanishes at zero shows "no data" on dashboards
    and never fires ``== 0`` alerts."""
    client = await make_client(settings, components=("chatbot",))
    samples = await scrape(client)
    assert by_label(samples, "switchboard_streams_open", "component") == {"chatbot": 0}
    await call(client, "POST", f"{CHATBOT}/sessions", {"session_name": "zero"}, status=201)
    async with open_stream(client, session_events("zero")):
        samples = await scrape(client)
        assert by_label(samples, "switchboard_streams_open", "component") == {"chatbot": 1}
    await settle(client, lambda s: streams_open(s)["chatbot"] == 0, "stream closed")
    samples = await scrape(client)
    assert by_label(samples, "switchboard_streams_open", "component") == {"chatbot": 0}


async def test_metrics_count_a_scripted_handoff(
    make_client: MakeClient, settings: Settings, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A handoff with a customer stream, an agent's session stream and the agent's own stream
    open; a resume that replays 6 events; a slow consumer cut off. Every counter moves by
    exactly what happened, and the streams' open and close lines are logged."""
    capture_logs(caplog, logging.INFO)
    client = await make_client(settings, queue_size=SLOW_QUEUE)
    name, scrapes = "obs", 0

    async def scraped() -> Samples:
        nonlocal scrapes
        scrapes += 1
        return await scrape(client)

    await call(client, "POST", f"{CHATBOT}/sessions", {"session_name": name}, status=201)
    async with AsyncExitStack() as stack:

        async def stream(path: str, headers: dict[str, str] | None = None) -> tuple[SSEStream, SSEEvent]:
            return await stack.enter_async_context(open_stream(client, path, headers=headers))

        customer, _ = await stream(session_events(name))
        agent, _ = await stream(agent_events(AGENT))
        watcher, _ = await stream(session_events(name, "workbench"))
        samples = await scraped()
        assert streams_open(samples) == {"chatbot": 1, "workbench": 2}
        assert value(samples, "switchboard_streams_opened_total") == 3

        # 1. chat in bot_active: the customer's message and the bot's answer (session channel).
        answer = await call(client, "POST", f"{CHATBOT}/chat", {"session_name": name, "content": "hello"})
        assert answer["reply"] is not None
        # 2. escalate: status_change (session), transfer_request (broadcast).
        await call(
            client, "POST", f"{CHATBOT}/manual/escalate", {"session_name": name, "reason": "metrics test"}
        )
        # 3. takeover: agent_joined + status_change (session), status_change (broadcast).
        await call(client, "POST", f"{WORKBENCH}/sessions/{name}/takeover", {"agent_id": AGENT})
        # 4. the agent answers: new_message (session).
        await call(
            client,
            "POST",
            f"{WORKBENCH}/sessions/{name}/messages",
            {"agent_id": AGENT, "content": "agent here"},
        )
        # 5. the customer again, now routed to the agent: new_message (session and agent).
        routed = await call(
            client, "POST", f"{CHATBOT}/chat", {"session_name": name, "content": "still there?"}
        )
        assert routed["reply"] is None

        session_types = [
            "new_message",
            "new_message",
            "status_change",
            "agent_joined",
            "status_change",
            "new_message",
            "new_message",
        ]
        seen = await customer.take(len(session_types))
        assert [e.type for e in seen] == session_types
        assert [e.type for e in await watcher.take(len(session_types))] == session_types
        assert [e.type for e in await agent.take(3)] == ["transfer_request", "status_change", "new_message"]
        samples = await scraped()
        assert by_label(samples, "switchboard_events_published_total", "type") == {
            "new_message": 5,
            "status_change": 3,
            "transfer_request": 1,
            "agent_joined": 1,
        }
        # One per stream an event reached: the session's 7 events twice, the agent's 3 once.
        assert by_label(samples, "switchboard_events_delivered_total", "type") == {
            "new_message": 4 * 2 + 1,
            "status_change": 2 * 2 + 1,
            "transfer_request": 1,
            "agent_joined": 2,
        }
        # Once per event and process: every one of the 10 events had a stream to go to.
        assert latency_count(samples) == 10
        assert value(samples, "switchboard_publish_to_delivery_seconds_bucket", le="+Inf") == 10
        latency_sum = value(samples, "switchboard_publish_to_delivery_seconds_sum")
        assert latency_sum is not None and 0 <= latency_sum < 10 * 5.0, latency_sum
        assert value(samples, "switchboard_events_replayed_total") == 0

        # 6. a resume after the first event: the 6 after it are replayed, nothing delivered.
        headers = {"Last-Event-ID": seen[0].id or ""}
        resumed, again = await stream(session_events(name), headers)
        assert again.payload["recovered"] is True, again
        replay = await resumed.take(len(seen) - 1)
        assert [e.id for e in replay] == [e.id for e in seen[1:]]
        await resumed.assert_quiet(0.2)
        samples = await scraped()
        assert value(samples, "switchboard_events_replayed_total") == 6
        assert sum(by_label(samples, "switchboard_events_delivered_total", "type").values()) == 17
        assert streams_open(samples) == {"chatbot": 2, "workbench": 2}
        assert value(samples, "switchboard_streams_opened_total") == 4

        # Requests are observed by route template (the full path of the sub-app's route), with
        # one observation per request; event streams are not observed.
        routes = {
            ("POST", f"{CHATBOT}/sessions", 201): 1,
            ("POST", f"{CHATBOT}/chat", 200): 2,
            ("POST", f"{CHATBOT}/manual/escalate", 200): 1,
            ("POST", f"{WORKBENCH}/sessions/{{session_name}}/takeover", 200): 1,
            ("POST", f"{WORKBENCH}/sessions/{{session_name}}/messages", 200): 1,
            ("GET", "/metrics", 200): scrapes - 1,
        }
        for (method, route, status), count in routes.items():
            assert request_count(samples, method, route, status) == count, (
                method,
                route,
                status,
                observed_routes(samples),
            )
        assert not [r for r in observed_routes(samples) if r[1].endswith("/events")]
        assert not [r for r in observed_routes(samples) if "obs" in r[1] or AGENT in r[1]]

    # All four closed: the gauge goes back (bounded wait), and each close was logged.
    samples = await settle(
        client, lambda s: streams_open(s) == {"chatbot": 0, "workbench": 0}, "streams closed"
    )
    records = await wait_for_records(
        caplog, lambda rs: len(stream_lines(rs, "closed")) >= 4, "four stream closes"
    )
    opened, closed = stream_lines(records, "open"), stream_lines(records, "closed")
    assert len(opened) == 4 and len(closed) == 4, [r.getMessage() for r in records]
    assert sorted(logged_field(r, "channels") for r in opened) == sorted(
        logged_field(r, "channels") for r in closed
    )
    assert {logged_field(r, "reason") for r in closed} == {"client left"}, [r.getMessage() for r in closed]
    assert all(r.levelno == logging.INFO for r in opened + closed)

    # 7. a slow consumer on a session of its own: cut off once its queue fills.
    before = await scrape(client)
    slow_name = "slow"
    await call(client, "POST", f"{CHATBOT}/sessions", {"session_name": slow_name}, status=201)
    assert client.server.port is not None
    # A subscription of the test's own, taking every event at once, keeps the channel live in
    # this process whatever becomes of the slow stream (cut off, it may leave and unsubscribe
    # while chats are still being published): every event is fanned out, and counted, once.
    keeper = client.app[BACKENDS].broker.subscribe(session_channel(slow_name))
    await keeper.__aenter__()
    keeper.write_through(lambda event: True)
    stalled = await StalledStream.open(client.server.port, session_events(slow_name))
    try:
        chats = 0
        async with asyncio.timeout(SLOW_DEADLINE):
            while True:
                assert chats < SLOW_MAX_CHATS, f"no cut-off after {chats} chats of 16 kB"
                for _ in range(SLOW_BATCH):
                    await call(
                        client, "POST", f"{CHATBOT}/chat", {"session_name": slow_name, "content": SLOW_FILLER}
                    )
                    chats += 1
                cut = await scrape(client)
                if value(cut, "switchboard_slow_consumer_disconnects_total"):
                    break
        # Every event reached the stream's subscription (on Redis, through pub/sub).
        sent = 2 * chats
        cut = await settle(
            client,
            lambda s: latency_count(s) == latency_count(before) + sent,
            "fan-outs of the slow session's events",
        )
        assert value(cut, "switchboard_slow_consumer_disconnects_total") == 1
        assert value(cut, "switchboard_stream_gaps_total") == 0
        assert value(cut, "switchboard_events_dropped_total", reason="malformed", type="unknown") == 0
        discarded = value(cut, "switchboard_events_dropped_total", reason="slow_consumer", type="new_message")
        published = by_label(cut, "switchboard_events_published_total", "type")
        assert published["new_message"] == 5 + sent, published
        delivered = by_label(cut, "switchboard_events_delivered_total", "type")
        extra = delivered["new_message"] - (4 * 2 + 1) - sent  # the keeper took every one
        # At least what the client can have got before the cut-off, at most everything.
        assert SLOW_QUEUE < extra <= sent, (extra, sent)
        wire = await stalled.drain()
    finally:
        stalled.close()
        await keeper.__aexit__(None, None, None)
    # What it gets when it reads: the events written before the cut-off, then a retry hint.
    got = wire.count(b'"type":"new_message"')
    assert 0 < got < sent, (got, sent)
    # Dropped: the full queue and the event that did not fit; never one the client got.
    assert discarded is not None and SLOW_QUEUE + 1 <= discarded <= extra - got, (discarded, extra, got)
    assert b"retry: " in wire[-200:], wire[-200:]
    logger.info(
        "slow consumer (%s): cut off after %d chats (%d events of 16 kB); %d counted as "
        "delivered to it, %d read by it",
        backend,
        chats,
        sent,
        extra,
        got,
    )
    await settle(client, lambda s: streams_open(s) == {"chatbot": 0, "workbench": 0}, "slow stream closed")
    records = await wait_for_records(
        caplog, lambda rs: len(stream_lines(rs, "closed")) >= 5, "slow stream close"
    )
    slow_close = stream_lines(records, "closed")[-1]
    assert logged_field(slow_close, "reason") == "client too slow: cut off", slow_close.getMessage()
    assert slow_close.levelno == logging.WARNING
    assert any("slow consumer cut off" in r.getMessage() for r in records)


def observed_routes(samples: Samples) -> list[tuple[str, str, str]]:
    return sorted(
        (labels_["method"], labels_["route"], labels_["status"])
        for (name, labels), _ in samples.items()
        if name == "switchboard_request_duration_seconds_count"
        for labels_ in [dict(labels)]
    )


async def test_request_histogram_keeps_route_templates(client: AppClient) -> None:
    """Errors are observed under their route's template (404 on a known route) or
    ``unmatched`` (no route): a path a client makes up never becomes a label value."""
    await call(client, "GET", f"{CHATBOT}/sessions/nobody-1", status=404)
    await call(client, "GET", f"{WORKBENCH}/sessions/nobody-2/messages", status=404)
    await call(client, "GET", "/made-up-path-1", status=404)
    await call(client, "GET", f"{CHATBOT}/made-up-path-2", status=404)
    await call(client, "DELETE", f"{CHATBOT}/chat", status=405)
    samples = await scrape(client)
    routes = observed_routes(samples)
    assert ("GET", f"{CHATBOT}/sessions/{{session_name}}", "404") in routes, routes
    assert ("GET", f"{WORKBENCH}/sessions/{{session_name}}/messages", "404") in routes, routes
    assert not [r for r in routes if "nobody" in r[1] or "made-up" in r[1]], routes
    unmatched = sum(
        number
        for (name, labels), number in samples.items()
        if name == "switchboard_request_duration_seconds_count" and dict(labels)["route"] == "unmatched"
    )
    assert unmatched == 3, routes


# --- 2. logs in process ------------------------------------------------------------------------


async def test_each_request_logs_one_line_with_its_request_id(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request logs exactly one line (method, path without its query, route, status, ms)
    carrying its X-Request-ID, which also comes back in the response header and in an error
    body; a stream's open and close lines carry its request's id too; ids do not leak between
    concurrent requests."""
    capture_logs(caplog)
    name = "ids"
    response = await exchange(
        client,
        "POST",
        f"{CHATBOT}/sessions",
        {"session_name": name},
        status=201,
        headers={"X-Request-ID": "test-123"},
    )
    assert response.headers["X-Request-ID"] == "test-123"
    response = await exchange(
        client,
        "POST",
        f"{CHATBOT}/chat",
        {"session_name": name},
        status=400,
        headers={"X-Request-ID": "test-err.1:a_B-9"},
    )
    error = response.body
    assert response.headers["X-Request-ID"] == "test-err.1:a_B-9"
    assert error["error"]["request_id"] == "test-err.1:a_B-9", error
    response = await exchange(
        client, "GET", "/no/such/path?x=1", status=404, headers={"X-Request-ID": "test-404"}
    )
    error = response.body
    assert (response.headers["X-Request-ID"], error["error"]["request_id"]) == ("test-404",) * 2

    path = session_events(name)
    async with open_stream(client, f"{path}?last_event_id=nope", headers={"X-Request-ID": "test-stream"}) as (
        stream,
        _,
    ):
        assert stream.response.headers["X-Request-ID"] == "test-stream"
        # Concurrent requests, each with its own id, while the stream is open.
        await asyncio.gather(
            *(
                call(client, "GET", f"{CHATBOT}/sessions/{name}", headers={"X-Request-ID": f"par-{i}"})
                for i in range(8)
            )
        )
        await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": name, "content": "hi"},
            headers={"X-Request-ID": "test-chat"},
        )
        await stream.take(2)
    records = await wait_for_records(
        caplog,
        lambda rs: any(getattr(r, "request_id", "") == "test-stream" for r in request_lines(rs)),
        "the stream's request line",
    )

    lines = request_lines(records)
    by_id: dict[str, list[logging.LogRecord]] = {}
    for record in lines:
        by_id.setdefault(logged_field(record, "request_id"), []).append(record)
    wanted = {
        "test-123": ("POST", f"{CHATBOT}/sessions", f"{CHATBOT}/sessions", 201),
        "test-err.1:a_B-9": ("POST", f"{CHATBOT}/chat", f"{CHATBOT}/chat", 400),
        "test-404": ("GET", "/no/such/path", "unmatched", 404),
        "test-stream": ("GET", path, f"{CHATBOT}/sessions/{{session_name}}/events", 200),
        "test-chat": ("POST", f"{CHATBOT}/chat", f"{CHATBOT}/chat", 200),
        **{
            f"par-{i}": ("GET", f"{CHATBOT}/sessions/{name}", f"{CHATBOT}/sessions/{{session_name}}", 200)
            for i in range(8)
        },
    }
    for request_id, (method, logged_path, route, status) in wanted.items():
        mine = by_id.get(request_id, [])
        assert len(mine) == 1, (request_id, [r.getMessage() for r in mine])
        line = mine[0]
        fields = tuple(logged_field(line, field) for field in ("method", "path", "route", "status"))
        assert fields == (method, logged_path, route, status), line.__dict__
        assert isinstance(logged_field(line, "ms"), float) and logged_field(line, "ms") >= 0
        assert line.levelno == logging.INFO
        assert f"{method} {logged_path} {status}" in line.getMessage()
    for record in stream_lines(records, "open") + stream_lines(records, "closed"):
        assert logged_field(record, "request_id") == "test-stream", record.getMessage()
    assert len(stream_lines(records, "open")) == len(stream_lines(records, "closed")) == 1
    # Probes and scrapes log their lines at DEBUG (they come every few seconds).
    for probe in ("/health", "/metrics"):
        async with client.get(probe, headers={"X-Request-ID": "probe"}) as probed:
            assert probed.status == 200
            await probed.read()
    probes = [r for r in request_lines(caplog.records) if logged_field(r, "request_id") == "probe"]
    assert sorted((logged_field(r, "path"), r.levelno) for r in probes) == [
        ("/health", logging.DEBUG),
        ("/metrics", logging.DEBUG),
    ]
    # Every line in both formats carries the id of the request it was logged in.
    for record in records:
        text, as_json = formatted(record)
        request_id = logged_field(record, "request_id")
        assert f"[{request_id}]" in text, text
        assert json.loads(as_json)["request_id"] == request_id
    # No query string in any of the app's lines (only the path is logged).
    ours = [r for r in records if r.name.split(".")[0] in ("app", "handlers", "realtime")]
    assert not [r.getMessage() for r in ours if "?" in r.getMessage() or "nope" in r.getMessage()]


@pytest.mark.parametrize(
    "claimed",
    ["has spaces", "x" * 129, "x" * 200, "semi;colon", "slash/es", 'quote"d', "", "é-accent"],
    ids=["spaces", "129-chars", "200-chars", "semicolon", "slash", "quote", "empty", "non-ascii"],
)
async def test_an_unacceptable_request_id_is_replaced(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, claimed: str
) -> None:
    """A request id that is not 1-128 of ``[A-Za-z0-9._:-]`` is replaced by a generated one
    (16 hex digits), in the header, the error body and the log line; the request is answered
    as usual (2xx or 4xx, never 5xx)."""
    capture_logs(caplog)
    client = await make_client(Settings(port=0, use_redis=False, insecure=True))
    headers = {"X-Request-ID": claimed.encode().decode("latin-1")}
    ids: list[str] = []
    response = await exchange(
        client, "POST", f"{CHATBOT}/sessions", {"session_name": "bad-id"}, status=201, headers=headers
    )
    ids.append(response.headers["X-Request-ID"])
    response = await exchange(client, "GET", f"{CHATBOT}/sessions/missing", status=404, headers=headers)
    error = response.body
    ids.append(response.headers["X-Request-ID"])
    assert error["error"]["request_id"] == ids[-1], error
    for generated in ids:
        assert GENERATED_ID.match(generated), generated
    assert ids[0] != ids[1]
    logged = [logged_field(r, "request_id") for r in request_lines(caplog.records)]
    assert logged == ids, (logged, ids)
    # The longest acceptable id is kept as it is.
    longest = "a." * 64
    response = await exchange(client, "GET", f"{CHATBOT}/sessions/bad-id", headers={"X-Request-ID": longest})
    assert response.headers["X-Request-ID"] == longest


async def test_no_token_or_message_content_in_logs_at_info(
    make_client: MakeClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A secure app, driven with tokens in headers and in ``?token=`` (good and bad ones), and
    messages with a unique marker: no line at INFO or above holds a token, a token's signature,
    the marker or a query string."""
    capture_logs(caplog, logging.INFO)
    client = await make_client(settings, insecure=False, secret=SECRET)
    marker = f"MARKER-{time.time_ns()}-secretcontent"
    authority = TokenAuthority(SECRET)
    alice = authority.mint("agent", AGENT, 600)
    wrong = TokenAuthority("another-secret-0123456789-0123456789-xyz").mint("agent", AGENT, 600)
    name = "private"
    created = await call(client, "POST", f"{CHATBOT}/sessions", {"session_name": name}, status=201)
    customer = created["token"]
    customer_stream = f"{session_events(name)}?token={customer}"
    agent_stream = f"{agent_events(AGENT)}?token={alice}"
    async with (
        open_stream(client, customer_stream) as (to_customer, _),
        open_stream(client, agent_stream) as (to_agent, _),
    ):
        await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": name, "content": f"{marker} please, a human"},
            headers=bearer(customer),
        )
        await to_agent.next_of("transfer_request")
        await call(client, "POST", f"{WORKBENCH}/sessions/{name}/takeover", headers=bearer(alice))
        await call(
            client,
            "POST",
            f"{WORKBENCH}/sessions/{name}/messages",
            {"content": f"agent says {marker}"},
            headers=bearer(alice),
        )
        await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": name, "content": f"customer says {marker}"},
            headers=bearer(customer),
        )
        await to_agent.next_of("new_message")
        assert marker in (await to_customer.next_of("new_message")).payload["message"]["content"]
        # Refused attempts: a forged token in a header and in a query, a token on the wrong
        # side, a message too long (its content in the error, never in the log).
        await call(client, "GET", f"{session_events(name)}?token={wrong}", status=401)
        await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": name, "content": marker},
            status=401,
            headers=bearer(wrong),
        )
        await call(client, "GET", f"{WORKBENCH}/sessions?token={alice}", status=401)
        await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": name, "content": marker * 200},
            status=400,
            headers=bearer(customer),
        )
        await call(client, "GET", f"{CHATBOT}/sessions/{name}/messages", headers=bearer(customer))
    records = await wait_for_records(
        caplog, lambda rs: len(stream_lines(rs, "closed")) >= 2, "both stream closes"
    )
    assert len(request_lines(records)) >= 12
    secrets_ = [marker, customer, alice, wrong]
    secrets_ += [token.rsplit(".", 1)[-1] for token in (customer, alice, wrong)]
    for record in records:
        if record.levelno < logging.INFO:
            continue
        for line in formatted(record):
            for secret in secrets_:
                assert secret not in line, (secret[:12], line[:300])
            assert "token=" not in line, line[:300]
            assert "Bearer" not in line, line[:300]


# --- 3. real processes -------------------------------------------------------------------------


JSON_KEYS = {"time", "level", "logger", "message", "request_id"}


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every line of the process's output as a JSON object (the test fails on any other)."""
    lines: list[dict[str, Any]] = []
    for raw in log.split("\n"):  # not splitlines(): JSON may hold U+2028 unescaped
        if not raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise AssertionError(f"not a JSON line: {raw[:300]!r}") from None
        assert isinstance(line, dict), raw[:300]
        assert set(line) >= JSON_KEYS, raw[:300]
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, raw[:300]
        lines.append(line)
    return lines


@pytest.mark.parametrize("mode", ["memory-flag", "redis-env"])
async def test_process_json_logs(server_process: StartServer, redis_url: str, mode: str) -> None:
    """A secure ``run.py`` with JSON logs (``--log-format json``, or SWITCHBOARD_LOG_FORMAT):
    every line of its output is a JSON object with time, level, logger, message and request_id;
    requests and streams log their lines with their fields and ids; no token and no message
    content is logged; its /metrics says its broker mode."""
    env = {"SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": SECRET}
    if mode == "memory-flag":
        server = server_process("--no-redis", "--log-format", "json", env=env)
    else:
        env.update(SWITCHBOARD_LOG_FORMAT="json", USE_REDIS_SSE="true")
        server = server_process("--redis-url", redis_url, env=env)
    base, name = server.url, "json-logs"
    marker = f"JSONMARK-{time.time_ns()}"
    alice = TokenAuthority(SECRET).mint("agent", AGENT, 600)
    async with aiohttp.ClientSession() as http:
        created = await call(
            http,
            "POST",
            f"{base}{CHATBOT}/sessions",
            {"session_name": name},
            status=201,
            headers={"X-Request-ID": "proc-create"},
        )
        customer = created["token"]
        url = f"{base}{session_events(name)}?token={customer}"
        async with open_stream(http, url, headers={"X-Request-ID": "proc-stream"}) as (stream, _):
            await call(
                http,
                "POST",
                f"{base}{CHATBOT}/chat",
                {"session_name": name, "content": f"hello {marker}"},
                headers={**bearer(customer), "X-Request-ID": "proc-chat"},
            )
            await stream.take(2)
        response = await exchange(
            http,
            "GET",
            f"{base}{WORKBENCH}/sessions",
            status=401,
            headers={**bearer(customer + "x"), "X-Request-ID": "proc-401"},
        )
        error = response.body
        assert response.headers["X-Request-ID"] == "proc-401"
        assert error["error"]["request_id"] == "proc-401"
        await call(http, "GET", f"{base}{WORKBENCH}/sessions", headers=bearer(alice))
        samples = await settle(http, lambda s: streams_open(s)["chatbot"] == 0, "stream closed", base)
        modes = by_label(samples, "switchboard_broker_mode", "mode")
        backend = "memory" if mode == "memory-flag" else "redis"
        assert modes[backend] == 1 and sum(modes.values()) == 1, modes
        reconnects = value(samples, "switchboard_redis_reconnects_total") or 0
        assert (reconnects >= 1) if backend == "redis" else (reconnects == 0), reconnects
        assert by_label(samples, "switchboard_events_published_total", "type") == {"new_message": 2}
        assert by_label(samples, "switchboard_events_delivered_total", "type") == {"new_message": 2}
    assert server.stop() == 0
    log = server.log()
    lines = json_lines(log)
    assert lines, "nothing logged"
    requests = [line for line in lines if line["logger"] == REQUEST_LOGGER and "status" in line]
    expected = {
        "proc-create": ("POST", f"{CHATBOT}/sessions", 201),
        "proc-stream": ("GET", session_events(name), 200),
        "proc-chat": ("POST", f"{CHATBOT}/chat", 200),
        "proc-401": ("GET", f"{WORKBENCH}/sessions", 401),
    }
    for request_id, (method, path, status) in expected.items():
        mine = [line for line in requests if line["request_id"] == request_id]
        assert len(mine) == 1, (request_id, mine)
        line = mine[0]
        assert (line["method"], line["path"], line["status"], line["level"]) == (
            method,
            path,
            status,
            "INFO",
        ), line
        assert isinstance(line["ms"], (int, float)) and "route" in line, line
    streams = [line for line in lines if line["logger"] == STREAM_LOGGER]
    assert [line["stream"] for line in streams] == ["open", "closed"], streams
    assert all(line["request_id"] == "proc-stream" for line in streams), streams
    assert streams[0]["channels"] == f"sse:session:{name}", streams
    assert streams[1]["reason"] == "client left" and "seconds" in streams[1], streams
    # Lines outside requests (start-up, the broker) carry "-".
    assert any(line["request_id"] == "-" and "serving" in line["message"] for line in lines)
    for secret in (marker, customer, alice, customer.rsplit(".", 1)[-1], "token="):
        assert secret not in log, secret[:12]


TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ "
    r"\[([A-Za-z0-9._:-]{1,128})\]: [^\x00-\x1f\x7f]*\Z"
)
FORGED = "2030-01-01 00:00:00,000 INFO app.web.middlewares [forged-id]: POST /forged 200 0.1 ms"


async def test_a_request_cannot_forge_log_lines(server_process: StartServer) -> None:
    """In the text format (the default) every line of a process is one record, with its level
    and request id: a path with percent-encoded CR, LF or escape sequences (which aiohttp
    decodes into request.path) must not start a line of its own or reach the terminal raw."""
    server = server_process("--no-redis")
    paths = [
        "/chatbot/api/sessions/x%0A" + FORGED.replace(" ", "%20").replace("[", "%5B").replace("]", "%5D"),
        "/nowhere%0D%0Aforged-crlf-line",
        "/nowhere%1B%5B2J%1B%5B31mred",
    ]
    async with aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(
                yarl.URL(server.url + path, encoded=True), headers={"X-Request-ID": "forger"}
            ) as response:
                assert response.status in (400, 404), await response.text()
                assert (await response.json())["error"]["request_id"] == "forger"
    assert server.stop() == 0
    log = server.log()
    lines = log.split("\n")
    assert lines[-1] == "", lines[-1:]
    forged = [line for line in lines if line.startswith(FORGED[:10])]
    assert not forged, forged
    bad = [line for line in lines[:-1] if not TEXT_LINE.match(line)]
    assert not bad, bad
    forger = [line for line in lines if "[forger]" in line]
    assert len(forger) == len(paths), forger


@pytest.mark.parametrize("how", ["flag", "env"])
def test_unknown_log_format_is_refused(
    run_py: Callable[..., subprocess.CompletedProcess[str]], how: str
) -> None:
    """``--log-format nope`` (or SWITCHBOARD_LOG_FORMAT=nope) stops the process at start with
    exit status 2 and a usage error naming the setting, without a traceback."""
    args = ["--no-redis", "--insecure", "--host", "127.0.0.1", "--port", str(free_port())]
    env = clean_env()
    if how == "flag":
        args += ["--log-format", "nope"]
    else:
        env["SWITCHBOARD_LOG_FORMAT"] = "nope"
    done = run_py(*args, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert re.search(r"log[_-]format", output), output
    assert "Traceback" not in output, output
