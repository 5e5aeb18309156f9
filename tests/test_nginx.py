"""nginx in front of the two-process split, with the shipped config (``deploy/nginx/``).

Real parts only: Debian's nginx, started by the test as its own process (``daemon off``, one
process, pid, logs and temp paths in tmp_path, listening on 127.0.0.1 only), a ``run.py
--chatbot`` and a ``run.py --workbench`` process on the suite's redis-server, and aiohttp
clients reading the SSE wire format through nginx's port. Nothing is mocked.

The shipped files are used as they are: ``switchboard_sse.conf`` byte for byte, in
``snippets/`` beside the generated nginx.conf (where Debian keeps it); ``switchboard.conf`` with
exactly four lines rewritten: the ``listen`` port (bound to 127.0.0.1), the two upstream
ports, and the access log's directory (/var/log/nginx is not the test's to write).

What these tests prove: the whole handoff works through nginx, each prefix reaching its own
process (nginx's access log names the upstream of every request), and the console, ``/`` and
the per-process health paths reach the right process; events leave nginx while the stream is
open, each well under a second after it is published (no proxy buffering), several in a row
with gaps; a restart of the chatbot process, and one of the workbench process, is survived by
an EventSource-like client that reconnects through nginx by itself with Last-Event-ID and ends
with every event exactly once, in order, including those published while the process was
down; while a process is down, nginx answers its event streams with a retry hint (200, not a
502 that EventSource would never retry: the reader meets it and keeps trying) and its API with
a JSON 503; and conversation starts are rate-limited per address, in the API's error shape.
"""

import asyncio
import logging
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.api import (
    act,
    agent_events,
    agent_say,
    assert_json_error,
    call,
    chat,
    create,
    escalate,
    session_events,
)
from tests.support.checks import check_strictly_increasing
from tests.support.handoff import run_handoff
from tests.support.processes import (
    MANY_STARTS,
    REDIS_ON,
    ROOT,
    ServerProcess,
    StartServer,
    free_port,
    stop_process,
)
from tests.support.readers import ReconnectingReader
from tests.support.sse import SSEEvent, open_stream
from tests.support.wait import poll_sync, until

logger = logging.getLogger(__name__)


SHIPPED = ROOT / "deploy" / "nginx"
NGINX_START_TIMEOUT = 10.0
NGINX_STOP_TIMEOUT = 5.0
QUIET = 0.3  # how long nothing more must arrive to show no event came twice
PROMPT = 1.0  # an event must leave nginx within this many seconds of its publish
# What nginx answers for an event stream whose process is away (switchboard.conf).
STREAM_AWAY = b": service unavailable\nretry: 1000\n\n"


# --- nginx, as the test's own process --------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def render_site(listen: int, chatbot: int, workbench: int, log_dir: Path) -> str:
    """The shipped switchboard.conf with its ports and log directory replaced, and nothing else
    (each replaced text occurs once; exactly four lines differ)."""
    shipped = (SHIPPED / "switchboard.conf").read_text()
    rendered = shipped
    for old, new in (
        ("    listen 8000;\n", f"    listen 127.0.0.1:{listen};\n"),
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{chatbot};"),
        ("server 127.0.0.1:8002;", f"server 127.0.0.1:{workbench};"),
        ("/var/log/nginx/switchboard.access.log", f"{log_dir}/switchboard.access.log"),
    ):
        assert rendered.count(old) == 1, f"switchboard.conf should hold {old!r} once"
        rendered = rendered.replace(old, new)
    before, after = shipped.splitlines(), rendered.splitlines()
    assert len(before) == len(after)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 4
    return rendered


class Nginx:
    """nginx with the shipped config in front of two processes; started and stopped by PID."""

    def __init__(self, binary: str, root: Path, chatbot: int, workbench: int) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.logs = root / "logs"
        conf = root / "conf"
        for directory in (self.logs, conf / "snippets", root / "temp"):
            directory.mkdir(parents=True)
        snippet = "switchboard_sse.conf"
        shutil.copyfile(SHIPPED / snippet, conf / "snippets" / snippet)
        site = conf / "switchboard.conf"
        site.write_text(render_site(self.port, chatbot, workbench, self.logs))
        temp = root / "temp"
        self.conf = conf / "nginx.conf"
        # master_process off: one process, so stopping it by its PID leaves no worker behind.
        self.conf.write_text(
            "daemon off;\n"
            "master_process off;\n"
            f"pid {root}/nginx.pid;\n"
            f"error_log {self.logs}/error.log info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    access_log {self.logs}/access.log;\n"
            f"    client_body_temp_path {temp}/client_body;\n"
            f"    proxy_temp_path {temp}/proxy;\n"
            f"    fastcgi_temp_path {temp}/fastcgi;\n"
            f"    uwsgi_temp_path {temp}/uwsgi;\n"
            f"    scgi_temp_path {temp}/scgi;\n"
            f"    include {site};\n"
            "}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        output = (self.logs / "nginx.out").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-p", f"{self.root}/", "-c", str(self.conf), "-e", str(self.logs / "error.log")],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        output.close()
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited at start:\n{self.log()}")
            try:
                # nginx's own JSON 404 (no process involved): nginx is listening.
                urllib.request.urlopen(f"{self.url}/not-routed", timeout=1).close()
            except urllib.error.HTTPError as exc:
                exc.close()
                return exc.code == 404
            except OSError:
                return False
            return False

        if not poll_sync(answers, timeout=NGINX_START_TIMEOUT).ok:
            self.stop()
            raise RuntimeError(f"nginx did not answer in {NGINX_START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM (fast shutdown, open streams included), then SIGKILL."""
        if self.process is not None:
            stop_process(self.process, NGINX_STOP_TIMEOUT)

    def log(self) -> str:
        parts = [
            path.read_text(errors="replace")
            for path in (self.logs / "nginx.out", self.logs / "error.log")
            if path.exists()
        ]
        return "\n".join(parts)

    def access(self) -> list[tuple[str, str, int, str]]:
        """(method, path, status, upstream) of every request nginx has logged so far."""
        path = self.logs / "switchboard.access.log"
        text = path.read_text() if path.exists() else ""
        pattern = re.compile(r'"(\S+) (\S+) HTTP/[\d.]+" (\d{3}) \d+ [\d.]+ upstream=(\S+) ')
        return [(m[1], m[2], int(m[3]), m[4]) for m in map(pattern.search, text.splitlines()) if m]


@dataclass
class Stack:
    chatbot: ServerProcess
    workbench: ServerProcess
    nginx: Nginx

    @property
    def url(self) -> str:
        return self.nginx.url


@pytest.fixture
def stack(server_process: StartServer, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A --chatbot and a --workbench process on the suite's Redis, nginx in front of them."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (make test installs Debian's nginx package)")
    # Heartbeats every second: the reconnecting reader counts 5 silent seconds as a dead link.
    common = ("--redis-url", redis_url, "--heartbeat", "1")
    # As the shipped unit runs it (nginx its trusted proxy), with --start-rate out of the way:
    # these tests start more conversations from one address than it allows, and test nginx's.
    chatbot = server_process(
        "--chatbot", *common, "--trusted-proxy", "127.0.0.1/32", *MANY_STARTS, env=REDIS_ON
    )
    workbench = server_process("--workbench", *common, env=REDIS_ON)
    nginx = Nginx(binary, tmp_path / "nginx", chatbot.port, workbench.port)
    try:
        nginx.start()
        yield Stack(chatbot, workbench, nginx)
    finally:
        nginx.stop()


# --- helpers -------------------------------------------------------------------------------


async def read_stream_answer(http: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    """Status, content type and whole body of a stream request that must end by itself."""
    async with asyncio.timeout(5), http.get(url) as response:
        return response.status, response.content_type, await response.read()


async def assert_away(
    http: aiohttp.ClientSession, base: str, stream_path: str, action: str, health_path: str
) -> None:
    """What nginx answers while the process behind these paths is down: event streams a 200
    that ends at once with a retry hint (EventSource then reconnects), the API a JSON 503 with
    Retry-After."""
    status, content_type, body = await read_stream_answer(http, base + stream_path)
    assert (status, content_type, body) == (200, "text/event-stream", STREAM_AWAY)
    refused = await assert_json_error(http, "POST", base + action, 503, "unavailable")
    assert refused.headers.get("Retry-After") == "1", refused.headers
    await assert_json_error(http, "GET", base + health_path, 503, "unavailable")


async def wait_until(check: Callable[[], bool], reading: asyncio.Task[None], timeout: float) -> None:
    """Poll ``check`` (bounded); a reader that failed meanwhile fails the test at once."""

    def ready() -> bool:
        if reading.done():
            reading.result()  # its AssertionError, say
            raise AssertionError("the reader stopped")
        return check()

    await until(ready, timeout=timeout, interval=0.02, what="the reader")


async def stop_reader(reading: asyncio.Task[None]) -> None:
    if reading.done():
        reading.result()
        return
    reading.cancel()
    with suppress(asyncio.CancelledError):
        await reading


async def retried_while_away(reader: ReconnectingReader, reading: asyncio.Task[None]) -> None:
    """Keep the process down until the reader has come back once (after the retry hint its
    stream ended with) and met nginx's answer for a process that is away: a stream without
    ``connected`` that asks for a retry in a second; the reader must keep trying."""
    await wait_until(lambda: len(reader.per_connection) >= 2, reading, 8)
    assert len(reader.connected) == 1, reader.connected
    assert reader.per_connection[1] == 0 and reader.hints[1] == 1000, (reader.per_connection, reader.hints)


def check_resumed(reader: ReconnectingReader) -> None:
    """It reconnected (the restart), each time resuming from the last id it had seen."""
    assert len(reader.connected) >= 2, reader.endings
    first_id = reader.connected[0][1].id
    assert first_id is not None
    check_strictly_increasing(first_id, reader.events)
    for sent, connected in reader.connected[1:]:
        assert sent is not None and connected.id == sent, (connected.id, sent)
        assert connected.payload["recovered"] is True, connected


# --- 1. the handoff, the console and health through nginx ------------------------------------


async def test_handoff_console_and_health_through_nginx(stack: Stack) -> None:
    """The whole handoff through nginx's one port; each prefix reaches its own process."""
    base = stack.url
    chatbot_up = f"127.0.0.1:{stack.chatbot.port}"
    workbench_up = f"127.0.0.1:{stack.workbench.port}"
    async with aiohttp.ClientSession() as http:
        for side, server in (("chatbot", stack.chatbot), ("workbench", stack.workbench)):
            body = await call(http, "GET", f"{base}/health/{side}")
            assert body["components"] == [side] and body["broker"] == "redis", body
            assert server.process is not None and body["pid"] == server.process.pid, body
            ready = await call(http, "GET", f"{base}/health/{side}/ready")
            assert ready["ready"] is True, ready

        async with asyncio.timeout(30):
            await run_handoff(http, base, base, "through-nginx", "agent-n")

        # The console: "/" redirects to it, and both reach the chatbot process.
        async with http.get(f"{base}/", allow_redirects=False) as response:
            assert response.status == 302, response.status
            assert response.headers["Location"] == "/console/index.html", response.headers
        async with http.get(f"{base}/console/index.html") as response:
            assert response.status == 200, response.status
            assert response.content_type == "text/html", response.content_type
            assert "Content-Security-Policy" in response.headers, response.headers

        # Not routed: nginx's JSON 404 (/metrics is for scrapers, at each process's address);
        # an unknown path under a prefix gets the process's own JSON 404.
        await assert_json_error(http, "GET", f"{base}/metrics", 404, "not_found")
        await assert_json_error(http, "GET", f"{base}/health", 404, "not_found")
        await assert_json_error(http, "GET", f"{base}/chatbot/api/nope", 404, "not_found")
        await assert_json_error(http, "GET", f"{base}/workbench/api/nope", 404, "not_found")

    # nginx's access log names the process that answered every request.
    logged = stack.nginx.access()
    expected_upstream = {
        "/chatbot/": chatbot_up,
        "/console/": chatbot_up,
        "/health/chatbot": chatbot_up,
        "/workbench/": workbench_up,
        "/health/workbench": workbench_up,
    }
    routed = 0
    for method, path, status, upstream in logged:
        if path == "/":
            assert upstream == chatbot_up, (method, path, upstream)
            routed += 1
        for prefix, wanted in expected_upstream.items():
            if path.startswith(prefix):
                assert upstream == wanted, (method, path, status, upstream)
                routed += 1
        if path in ("/metrics", "/health", "/not-routed"):
            assert upstream == "-", (method, path, upstream)  # nginx answered itself
    assert ("GET", "/", 302, chatbot_up) in logged, logged
    assert ("GET", "/console/index.html", 200, chatbot_up) in logged, logged
    assert sum(1 for m, p, *_ in logged if m == "POST" and p.startswith("/chatbot/")) == 5
    assert sum(1 for m, p, *_ in logged if m == "POST" and p.startswith("/workbench/")) == 3
    assert routed >= 15, logged


# --- 2. no buffering -------------------------------------------------------------------------


async def test_events_leave_nginx_while_the_stream_is_open(stack: Stack) -> None:
    """Each event arrives through nginx well within a second of its publish, several in a row
    with gaps between them, on the customer's stream (chatbot process) and the agent's
    (workbench process), and the streams stay open: nothing is held back for a buffer."""
    base, name, agent, rounds = stack.url, "unbuffered", "agent-u", 6
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:
        await create(http, name, base=base)
        await act(http, name, "takeover", agent, base=base)
        async with AsyncExitStack() as streams:
            # `connected` is a few hundred bytes: a buffering proxy would sit on it (and on the
            # response headers).
            try:
                async with asyncio.timeout(2 * PROMPT):
                    customer, _ = await streams.enter_async_context(
                        open_stream(http, base + session_events(name))
                    )
                    agent_view, _ = await streams.enter_async_context(
                        open_stream(http, base + agent_events(agent))
                    )
            except TimeoutError:
                raise AssertionError(f"the streams did not open within {2 * PROMPT} s") from None
            for response in (customer.response, agent_view.response):
                assert response.headers["Content-Type"].startswith("text/event-stream")
                assert "Content-Length" not in response.headers, response.headers
                assert "Content-Encoding" not in response.headers, response.headers
            for i in range(rounds):
                await asyncio.sleep(0.3)  # a gap: the stream is idle before each event
                sent = time.monotonic()
                await agent_say(http, name, agent, f"agent {i}", base=base)
                event = await customer.next_of("new_message", timeout=2 * PROMPT)
                latencies.append(time.monotonic() - sent)
                assert event.payload["message"]["content"] == f"agent {i}", event

                await asyncio.sleep(0.3)
                sent = time.monotonic()
                answer = await chat(http, name, f"customer {i}", base=base)
                assert answer["reply"] is None, answer  # the agent holds the session
                # The agent gets it, and the customer's own stream shows it too.
                for stream in (agent_view, customer):
                    event = await stream.next_of("new_message", timeout=2 * PROMPT)
                    latencies.append(time.monotonic() - sent)
                    assert event.payload["message"]["content"] == f"customer {i}", event
            # Still open afterwards: the next frame is a heartbeat, not the end of the stream.
            for stream in (customer, agent_view):
                assert (await stream.next_of("heartbeat", timeout=3)).type == "heartbeat"
    logger.info(
        "through nginx: %d events, latency from publish max %.1f ms, median %.1f ms",
        len(latencies),
        max(latencies) * 1000,
        sorted(latencies)[len(latencies) // 2] * 1000,
    )
    assert max(latencies) < PROMPT, [round(x, 3) for x in latencies]


# --- 3. restarts behind nginx ----------------------------------------------------------------


async def test_customer_stream_survives_a_chatbot_restart_behind_nginx(stack: Stack) -> None:
    """The chatbot process is stopped and started again behind nginx while the agent keeps
    talking (through the workbench process): the customer's EventSource-like reader
    reconnects through nginx by itself and gets every message once, in order."""
    base, name, agent = stack.url, "chatbot-restart", "agent-c"
    expected = [f"agent says {i:02d}" for i in range(15)]
    async with aiohttp.ClientSession() as http:
        await create(http, name, base=base)
        await act(http, name, "takeover", agent, base=base)
        reader = ReconnectingReader(http, base + session_events(name))
        reading = asyncio.create_task(reader.run())

        def seen() -> list[str]:
            return [m["content"] for m in reader.messages()]

        try:
            async with asyncio.timeout(40):
                await wait_until(lambda: bool(reader.connected), reading, 5)
                for content in expected[:5]:  # before: delivered live
                    await agent_say(http, name, agent, content, base=base)
                await wait_until(lambda: len(seen()) == 5, reading, 5)

                status = await asyncio.to_thread(stack.chatbot.stop)
                assert status == 0, stack.chatbot.log()
                for content in expected[5:10]:  # while the customer side is down
                    await agent_say(http, name, agent, content, base=base)
                await assert_away(http, base, session_events(name), "/chatbot/api/chat", "/health/chatbot")
                await retried_while_away(reader, reading)
                await asyncio.to_thread(stack.chatbot.start)

                for content in expected[10:]:  # after
                    await agent_say(http, name, agent, content, base=base)
                await wait_until(lambda: len(seen()) >= len(expected), reading, 15)
                await asyncio.sleep(QUIET)  # room for a duplicate to show
        finally:
            await stop_reader(reading)

    assert seen() == expected, seen()
    assert all(event.type == "new_message" for event in reader.events), reader.events
    check_resumed(reader)
    logger.info(
        "chatbot restart behind nginx: %d connections, endings %s, retry hints %s ms",
        len(reader.connected),
        reader.endings,
        reader.hints,
    )


def describe(event: SSEEvent) -> tuple[str, str]:
    if event.type == "new_message":
        return event.type, event.payload["message"]["content"]
    return event.type, event.payload["session_name"]


async def test_agent_stream_survives_a_workbench_restart_behind_nginx(stack: Stack) -> None:
    """The workbench process is stopped and started again behind nginx while customers keep
    writing and asking for help (through the chatbot process): the agent's EventSource-like
    reader reconnects through nginx by itself and gets every event of its two channels (its
    own and the broadcast) once, in publish order."""
    base, held, queued, agent = stack.url, "workbench-restart", "needs-help", "agent-w"
    async with aiohttp.ClientSession() as http:
        await create(http, held, base=base)
        await create(http, queued, base=base)
        await act(http, held, "takeover", agent, base=base)
        reader = ReconnectingReader(http, base + agent_events(agent))
        reading = asyncio.create_task(reader.run())
        expected: list[tuple[str, str]] = []

        async def customer_says(i: int) -> None:
            answer = await chat(http, held, f"customer says {i:02d}", base=base)
            assert answer["reply"] is None, answer  # held: it goes to the agent
            expected.append(("new_message", f"customer says {i:02d}"))

        try:
            async with asyncio.timeout(40):
                await wait_until(lambda: bool(reader.connected), reading, 5)
                for i in range(4):  # before: delivered live
                    await customer_says(i)
                await wait_until(lambda: len(reader.events) == 4, reading, 5)

                status = await asyncio.to_thread(stack.workbench.stop)
                assert status == 0, stack.workbench.log()
                for i in range(4, 6):  # while the agent side is down
                    await customer_says(i)
                await escalate(http, queued, base=base)  # broadcast: transfer_request
                expected.append(("transfer_request", queued))
                await customer_says(6)
                await assert_away(
                    http,
                    base,
                    agent_events(agent),
                    f"/workbench/api/sessions/{held}/release",
                    "/health/workbench",
                )
                await retried_while_away(reader, reading)
                await asyncio.to_thread(stack.workbench.start)

                for i in range(7, 11):  # after
                    await customer_says(i)
                await wait_until(lambda: len(reader.events) >= len(expected), reading, 15)
                await asyncio.sleep(QUIET)  # room for a duplicate to show
        finally:
            await stop_reader(reading)

    assert [describe(event) for event in reader.events] == expected
    check_resumed(reader)
    logger.info(
        "workbench restart behind nginx: %d connections, endings %s, retry hints %s ms",
        len(reader.connected),
        reader.endings,
        reader.hints,
    )


# --- 4. conversation starts are limited per address -----------------------------------------


async def test_conversation_starts_are_rate_limited_at_nginx(stack: Stack) -> None:
    """POSTs without a token to /chatbot/api/sessions: a burst of 40 passes, then 2 a second,
    the rest get a JSON 429 with Retry-After; requests with a token are not counted."""
    base, attempts = stack.url, 60
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        for _ in range(attempts):
            async with http.post(f"{base}/chatbot/api/sessions") as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers.get("Retry-After") == "1", response.headers
                    body = await response.json()
                    assert body["error"]["code"] == "rate_limited", body
        elapsed = time.monotonic() - started
        # 1 + a burst of 40 at once, then 2 a second (elapsed rounds up: one more at most).
        allowed = 41 + math.ceil(elapsed * 2)
        created = statuses.count(201)
        assert statuses[:40] == [201] * 40, statuses
        assert created <= allowed and created + statuses.count(429) == attempts, statuses

        # A request with a token is the server's to limit (per token); --insecure ignores it.
        async with http.post(
            f"{base}/chatbot/api/sessions", headers={"Authorization": "Bearer any"}
        ) as response:
            assert response.status == 201, await response.text()
        # Reads are not limited.
        health: dict[str, Any] = await call(http, "GET", f"{base}/health/chatbot")
        assert health["status"] == "ok", health
