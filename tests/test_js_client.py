"""The client integration guide (docs/clients.md) for real: the console's ES module
``app/static/switchboard.js`` run unchanged in Node.js (its built-in ``EventSource`` and
``fetch``), and the guide's Python client loaded from the guide's own code block, each against
real ``run.py`` processes on the suite's redis-server, all on 127.0.0.1. Nothing is mocked.

What these tests prove:

- ``LiveStream`` and ``createApi`` follow a customer's session stream and an agent's stream
  through a handoff; when the server process restarts on the same port while a second process
  publishes, both streams reconnect by themselves and resume: the server's ``connected`` says
  it resumed from the last id the client saw (``recovered: true``), and the events each stream
  delivered are exactly its channels' history, each once, in order, with no refetch;
- a server that stops answering (SIGSTOP: the connection stays open, heartbeats stop) is
  detected by the silence watchdog (``staleAfter``, 2.5 heartbeat intervals), which reopens the
  stream with ``?last_event_id=``; nothing is lost;
- when the history no longer reaches back to the client's position (trimmed while it was away),
  ``recovered: false`` makes the module call ``onResync`` and the refetched transcript is the
  server's; the other stream, whose history is intact, resumes without a refetch;
- under authentication the module sends the token as ``?token=`` on streams and as a Bearer
  header on the API, and a stream whose token is refused (401, 403) ends in state ``failed``
  after one probe of the API instead of retrying for ever;
- ``api.all`` reads a paged listing whole, following ``next_cursor``, within its page budget;
- the guide's Python (aiohttp) client resumes across a restart with every event once and in
  order, and refetches on ``recovered: false``.

Needs Node.js with a global ``EventSource`` behind ``--experimental-eventsource`` (22.12+, or a
recent 20 such as 20.20); skipped, saying why, without it.
"""

import asyncio
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support.api import agent_say, bearer, call, chat
from tests.support.processes import ROOT, StartServer
from tests.support.wait import until_signalled

pytestmark = pytest.mark.timeout(60)
logger = logging.getLogger(__name__)

NODE = shutil.which("node")
NODE_ARGS = ["--experimental-eventsource"]
DRIVER = ROOT / "tests" / "js" / "live_client.mjs"
MODULE = ROOT / "app" / "static" / "switchboard.js"
GUIDE = ROOT / "docs" / "clients.md"
REDIS_ON = {"USE_REDIS_SSE": "true"}
WAIT = 10.0  # every wait for the client is bounded by this (seconds)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
AGENT = "alice"


@cache
def node_problem() -> str | None:
    """Why Node.js cannot run the module here, or None when it can."""
    if NODE is None:
        return "node is not installed (it needs Node.js 22.12+ or a recent 20, such as 20.20)"
    probe = (
        f"import({json.dumps(MODULE.as_uri())}).then((m) => "
        "console.log(typeof EventSource, typeof m.LiveStream, process.version))"
    )
    try:
        done = subprocess.run(
            [NODE, *NODE_ARGS, "-e", probe], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"node does not run: {exc!r}"
    words = done.stdout.split()
    if done.returncode != 0 or words[:2] != ["function", "function"]:
        return (
            f"node {' '.join(words[2:]) or '?'} cannot run the module with a global EventSource "
            f"(needs 22.12+ or a recent 20 such as 20.20): {done.stderr.strip()[-300:]}"
        )
    return None


@pytest.fixture
def node() -> str:
    problem = node_problem()
    if problem is not None:
        pytest.skip(problem)
    assert NODE is not None
    return NODE


# --- the Node.js client -----------------------------------------------------------------------


class NodeClient:
    """tests/js/live_client.mjs as a child process: its JSON lines, and bounded waits on them."""

    def __init__(self, node: str, config: dict[str, Any], stderr_path: Path) -> None:
        self.node = node
        self.config = {"lifetime": 55, **config}
        self.stderr_path = stderr_path
        self.lines: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()

    async def start(self) -> None:
        with self.stderr_path.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                self.node,
                *NODE_ARGS,
                str(DRIVER),
                json.dumps(self.config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
            )
        self._reader = asyncio.create_task(self._read())
        await self.wait("ready", lambda: any(line["kind"] == "ready" for line in self.lines))

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(json.loads(raw))
            self._tick.set()
        self._tick.set()

    async def stop(self) -> None:
        """Close its standard input (it closes its streams and exits); kill it by PID if it
        does not exit within 5 s."""
        process = self.process
        if process is None:
            return
        try:
            if process.returncode is None and process.stdin is not None:
                process.stdin.close()
                with suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 5)
        finally:
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 5)
            if self._reader is not None:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._reader, 5)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    async def wait(self, what: str, ready: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Until ``ready()`` is truthy (checked on every new line), at most ``timeout``."""

        def exited() -> bool:
            return self._reader is not None and self._reader.done()

        result = await until_signalled(ready, self._tick, timeout=timeout, stop=exited)
        if result:
            return result
        tail = "\n".join(json.dumps(line) for line in self.lines[-30:])
        raise AssertionError(
            f"{'node exited' if exited() else f'no {what} within {timeout} s'}; last lines:\n"
            f"{tail}\nstderr:\n{self.stderr()[-2000:]}"
        )

    # What it printed, per stream.

    def of(self, kind: str, stream: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line["kind"] == kind and (stream is None or line.get("stream") == stream)
        ]

    def events(self, stream: str) -> list[dict[str, Any]]:
        """Delivered events that carry an id, ``connected`` excluded (heartbeats have none)."""
        return [e for e in self.of("event", stream) if e["type"] not in ("connected", "heartbeat")]

    def connected(self, stream: str) -> list[dict[str, Any]]:
        return [e for e in self.of("event", stream) if e["type"] == "connected"]

    def ids(self, stream: str) -> list[str]:
        return [e["id"] for e in self.events(stream)]

    def last_id(self, stream: str) -> str:
        seen: list[str] = [e["id"] for e in self.of("event", stream) if e["id"]]
        assert seen, stream
        return seen[-1]

    def opens(self, path: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == "open" and line["path"] == path]

    def errors(self, path: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == "es_error" and line["path"] == path]

    def state(self, stream: str) -> str | None:
        states = self.of("state", stream)
        return states[-1]["state"] if states else None


async def node_client(
    node: str, tmp_path: Path, base: str, streams: list[dict[str, Any]], **options: Any
) -> NodeClient:
    client = NodeClient(
        node,
        {"base": base, "streams": streams, "options": options},
        tmp_path / f"node-{len(list(tmp_path.glob('node-*')))}.stderr",
    )
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


# --- helpers ----------------------------------------------------------------------------------


async def run(blocking: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Process control blocks (it polls /health, waits for exit): keep it off the event loop
    that reads the clients."""
    return await asyncio.to_thread(blocking, *args, **kwargs)


def key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def assert_strictly_increasing(ids: list[str]) -> None:
    """Each event once and in order (ids strictly increase within a stream)."""
    assert all(key(a) < key(b) for a, b in itertools.pairwise(ids)), ids


async def history_ids(redis: Redis, channels: list[str], after: str) -> list[str]:
    """The ids of the channels' history (``history:<channel>``, docs/api.md) after ``after``,
    merged in id order: what a stream of these channels owes a client at ``after``."""
    found: list[str] = []
    for channel in channels:
        # The suite's client decodes responses: each entry is (id, fields) in str.
        entries = cast(
            list[tuple[str, dict[str, str]]], await redis.xrange(f"history:{channel}", min=f"({after}")
        )
        found += [entry_id for entry_id, _ in entries]
    return sorted(found, key=key)


async def trim_history_past(
    redis: Redis, channel: str, position: str, publish: Callable[[int], Awaitable[Any]]
) -> int:
    """Publish (through a process with ``--history-size 1``) until the channel's history no
    longer holds ``position``: a client resuming from there is owed events that are gone."""
    for count in range(1, 301):
        await publish(count)
        info = await redis.xinfo_stream(f"history:{channel}")
        if key(info["first-entry"][0]) > key(position):
            return count
    raise AssertionError(f"history:{channel} still reaches back to {position} after 300 events")


def session_streams(name: str) -> list[dict[str, Any]]:
    """A customer's stream and an agent's stream, as the console opens them."""
    session = f"/chatbot/api/sessions/{name}"
    queue = "/workbench/api/sessions?status=waiting_agent"
    return [
        {
            "name": "customer",
            "path": f"{session}/events",
            "resync": [session, f"{session}/messages"],
            "probe": session,
        },
        {"name": "agent", "path": f"/workbench/api/agents/{AGENT}/events", "resync": [queue], "probe": queue},
    ]


CHANNELS = {
    "customer": lambda name: [f"sse:session:{name}"],
    "agent": lambda name: [f"sse:agent:{AGENT}", "sse:broadcast"],
}


# --- tests ------------------------------------------------------------------------------------


async def test_js_client_resumes_across_restarts_and_refetches_when_told(
    node: str, server_process: StartServer, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    started = time.monotonic()
    name = "js-demo"
    common = ("--insecure", "--redis-url", redis_url)
    # A: the process the clients talk to (a heartbeat every second, so that the silence
    # watchdog can be tested in seconds); B publishes while A is away; so does "short", which
    # keeps one event of history per channel (the publisher trims).
    a, b, short = await asyncio.gather(
        run(server_process, *common, "--heartbeat", "1", env=REDIS_ON),
        run(server_process, *common, env=REDIS_ON),
        run(server_process, *common, "--history-size", "1", env=REDIS_ON),
    )
    paths = {spec["name"]: spec["path"] for spec in session_streams(name)}
    streams = ("customer", "agent")
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        await call(http, "POST", f"{a.url}/chatbot/api/sessions", {"session_name": name}, status=201)
        # Two Node.js processes follow the same two streams: "watchful" reopens a stream silent
        # for 2.5 s (2.5 heartbeats here); "patient" keeps the default 75 s, so that nothing
        # but the module's handling of a closed EventSource can bring it back within the test.
        clients: dict[str, NodeClient] = {}
        try:
            for label, options in (("watchful", {"staleAfter": 2500}), ("patient", {})):
                clients[label] = await node_client(
                    node, tmp_path, a.url, session_streams(name), minDelay=300, maxDelay=2000, **options
                )
            everyone = list(clients.values())

            # --- 1. connected, the view loaded once, then the handoff live ---------------------
            first: dict[tuple[str, str], dict[str, Any]] = {}
            for label, client in clients.items():
                for stream in streams:
                    # The view is loaded first; the events that came meanwhile (connected) follow.
                    await client.wait(
                        f"{label} {stream} loaded",
                        lambda c=client, s=stream: c.of("resync", s) and c.connected(s),  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                    )
                    first[label, stream] = client.connected(stream)[0]
                    assert first[label, stream]["payload"]["recovered"] is True
                    loaded = client.of("resync", stream)[0]
                    assert loaded["initial"] is True and loaded["recovered"] is True, loaded
                assert first[label, "customer"]["payload"]["session_name"] == name
                assert first[label, "agent"]["payload"]["agent_id"] == AGENT
                loaded = client.of("resync", "customer")[0]
                assert loaded["data"][f"/chatbot/api/sessions/{name}"]["status"] == "bot_active"

            await chat(http, name, "Hello", base=a.url)
            await chat(http, name, "I want a human", base=a.url)
            await call(http, "POST", f"{a.url}/workbench/api/sessions/{name}/takeover", {"agent_id": AGENT})
            await agent_say(http, name, AGENT, "Hi, this is Alice.", base=a.url)
            await chat(http, name, "My order is late.", base=a.url)

            async def caught_up() -> None:
                """Every client delivered exactly its streams' history since it connected: each
                event once, in order, none missing."""
                for label, client in clients.items():
                    for stream in streams:
                        after = first[label, stream]["id"]
                        expected = await history_ids(redis, CHANNELS[stream](name), after)
                        await client.wait(
                            f"{label} {stream}: {len(expected)} events",
                            lambda c=client, s=stream, x=expected: c.ids(s) == x,  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                        )

            await caught_up()
            for client in everyone:
                assert [e["type"] for e in client.events("customer")] == [
                    "new_message",
                    "new_message",
                    "new_message",
                    "new_message",
                    "status_change",
                    "agent_joined",
                    "status_change",
                    "new_message",
                    "new_message",
                ]
                assert [e["type"] for e in client.events("agent")] == [
                    "transfer_request",
                    "status_change",
                    "new_message",
                ]

            def positions() -> dict[tuple[str, str], str]:
                return {(label, s): client.last_id(s) for label, client in clients.items() for s in streams}

            def counts(kind: Callable[[NodeClient, str], list[Any]]) -> dict[tuple[str, str], int]:
                return {
                    (label, s): len(kind(client, s)) for label, client in clients.items() for s in streams
                }

            def opened(label: str, stream: str) -> list[dict[str, Any]]:
                return clients[label].opens(paths[stream])

            # --- 2. A restarts; B publishes while it is away --------------------------------------
            before, connects = positions(), counts(NodeClient.connected)
            opens = counts(lambda c, s: c.opens(paths[s]))
            assert await run(a.stop) == 0
            for (label, stream), client in ((k, clients[k[0]]) for k in before):
                await client.wait(
                    f"{label} {stream} reconnecting",
                    lambda c=client, s=stream: c.state(s) == "reconnecting",  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                )
            await agent_say(http, name, AGENT, "Are you still there?", base=b.url)
            await chat(http, name, "Yes, still here.", base=b.url)  # also on the agent's channel
            await chat(http, "js-other", "Can I talk to a person?", base=b.url)  # the broadcast
            await run(a.start)  # the same port

            for (label, stream), client in ((k, clients[k[0]]) for k in before):
                await client.wait(
                    f"{label} {stream} reconnected",
                    lambda c=client,  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                    s=stream,
                    n=connects[label, stream]: len(c.connected(s)) > n,
                )
                again = client.connected(stream)[connects[label, stream]]
                # The server resumed from exactly the last id the client had seen.
                assert again["id"] == before[label, stream], (again, before)
                assert again["payload"]["recovered"] is True, again
                # By EventSource's own reconnection (the Last-Event-ID header: no new
                # EventSource), or, if it gave up on a refused connection, by the module's
                # reopening with ?last_event_id=.
                reopened = opened(label, stream)[opens[label, stream] :]
                assert all(o["last_event_id"] == before[label, stream] for o in reopened), reopened
                logger.info(
                    "restart: %s %s resumed by %s",
                    label,
                    stream,
                    "the module (?last_event_id=)" if reopened else "EventSource (Last-Event-ID)",
                )
            await caught_up()
            for client in everyone:
                assert [e["payload"]["message"]["content"] for e in client.events("customer")[-2:]] == [
                    "Are you still there?",
                    "Yes, still here.",
                ]
                assert [e["type"] for e in client.events("agent")[-2:]] == ["new_message", "transfer_request"]
                # Resumed from the replay: the views were loaded once, never refetched.
                assert [len(client.of("resync", s)) for s in streams] == [1, 1]

            # --- 3. A freezes: the connections stay open, but fall silent -------------------------
            watchful, patient = clients["watchful"], clients["patient"]
            before, opens = positions(), counts(lambda c, s: c.opens(paths[s]))
            connects = counts(NodeClient.connected)
            assert a.process is not None
            a.process.send_signal(signal.SIGSTOP)
            try:
                await agent_say(http, name, AGENT, "Sent while the server was frozen.", base=b.url)
                for stream in streams:
                    # No heartbeat for 2.5 s: the watchdog reopens from where the client was.
                    await watchful.wait(
                        f"{stream} reopened by the watchdog",
                        lambda s=stream: len(opened("watchful", s)) > opens["watchful", s],  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                    )
            finally:
                a.process.send_signal(signal.SIGCONT)
            await caught_up()
            for stream in streams:
                watchdog_open = opened("watchful", stream)[opens["watchful", stream]]
                assert watchdog_open["last_event_id"] == before["watchful", stream], watchdog_open
                await watchful.wait(
                    f"{stream} resumed",
                    lambda s=stream: len(watchful.connected(s)) > connects["watchful", s],  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                )
                assert watchful.connected(stream)[-1]["payload"]["recovered"] is True
                # The patient client kept its connection: the frozen server caught up on it.
                assert len(opened("patient", stream)) == opens["patient", stream]
                assert len(patient.connected(stream)) == connects["patient", stream]
            for client in everyone:
                assert client.events("customer")[-1]["payload"]["message"]["content"] == (
                    "Sent while the server was frozen."
                )

            # --- 4. the history no longer reaches back: recovered false, refetch ----------------
            before, connects = positions(), counts(NodeClient.connected)
            errors = {label: len(client.errors(paths["customer"])) for label, client in clients.items()}
            assert await run(a.stop) == 0
            # At least one reconnection attempt fails while A is down (the end of the stream
            # is one error, a refused connection at least one more).
            for label, client in clients.items():
                await client.wait(
                    f"{label}: a refused reconnection",
                    lambda c=client, n=errors[label]: len(c.errors(paths["customer"])) >= n + 2,  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                )
            trimmed = await trim_history_past(
                redis,
                f"sse:session:{name}",
                before["watchful", "customer"],
                lambda i: agent_say(http, name, AGENT, f"Filler {i}", base=short.url),
            )
            await run(a.start)
            transcript = await call(http, "GET", f"{a.url}/chatbot/api/sessions/{name}/messages")
            for label, client in clients.items():
                for stream in streams:
                    await client.wait(
                        f"{label} {stream} back",
                        lambda c=client,  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                        s=stream,
                        n=connects[label, stream]: len(c.connected(s)) > n,
                    )
                gone = client.connected("customer")[-1]
                assert gone["payload"]["recovered"] is False, gone
                refetched = client.of("resync", "customer")
                assert len(refetched) == 2, refetched
                assert refetched[1]["initial"] is False and refetched[1]["recovered"] is False
                assert refetched[1]["data"][f"/chatbot/api/sessions/{name}/messages"]["messages"] == [
                    m["id"] for m in transcript["messages"]
                ]
                # The agent's channels lost nothing: resumed, no refetch.
                assert client.connected("agent")[-1]["payload"]["recovered"] is True
                assert client.connected("agent")[-1]["id"] == before[label, "agent"]
                assert len(client.of("resync", "agent")) == 1

            # Live events go on, delivered after the refetch, once.
            await agent_say(http, name, AGENT, "Back to normal.", base=a.url)
            for label, client in clients.items():
                await client.wait(
                    f"{label}: the live message",
                    lambda c=client: (  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                        c.events("customer")[-1]["payload"]["message"]["content"] == "Back to normal."
                    ),
                )
                for stream in streams:
                    assert_strictly_increasing(client.ids(stream))
                refetch = client.lines.index(client.of("resync", "customer")[1])
                assert client.lines.index(client.events("customer")[-1]) > refetch
        finally:
            for client in clients.values():
                await client.stop()
    for client in clients.values():
        assert client.process is not None and client.process.returncode == 0, client.stderr()
    took = time.monotonic() - started
    assert took < 40, f"took {took:.1f} s ({trimmed} fillers)"


async def test_js_client_with_tokens(node: str, server_process: StartServer, tmp_path: Path) -> None:
    secret = "js-client-test-secret-" + os.urandom(16).hex()
    env = {"SWITCHBOARD_INSECURE": ""}
    server = await run(server_process, "--no-redis", "--secret", secret, env=env)
    minted = await run(
        subprocess.run,
        [sys.executable, str(ROOT / "run.py"), "token", "--agent", AGENT, "--secret", secret],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert minted.returncode == 0, minted.stderr
    agent_token = minted.stdout.strip()
    name = "js-secure"
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        created = await call(
            http, "POST", f"{server.url}/chatbot/api/sessions", {"session_name": name}, status=201
        )
        customer_token = created["token"]
        customer, agent = session_streams(name)
        streams = [
            {**customer, "token": customer_token},
            {**agent, "token": agent_token},
            # Refused: a customer token on the workbench (403), and no token at all (401).
            {**agent, "name": "intruder", "token": customer_token},
            {**customer, "name": "anonymous", "resync": []},
        ]
        client = await node_client(node, tmp_path, server.url, streams, minDelay=200, maxDelay=1000)
        try:
            for stream in ("customer", "agent"):
                await client.wait(f"{stream} loaded", lambda s=stream: client.of("resync", s))  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
            for stream, code, status in (("intruder", "forbidden", 403), ("anonymous", "unauthorized", 401)):
                await client.wait(f"{stream} failed", lambda s=stream: client.state(s) == "failed")  # type: ignore[misc]  # python/mypy#15459: defaults bind the loop variables
                assert client.of("state", stream)[-1]["error"] == {"status": status, "code": code}
                assert not client.of("event", stream) and not client.of("resync", stream)

            await chat(http, name, "I want a human", base=server.url, headers=bearer(customer_token))
            await call(
                http,
                "POST",
                f"{server.url}/workbench/api/sessions/{name}/takeover",
                headers=bearer(agent_token),
            )
            await call(
                http,
                "POST",
                f"{server.url}/workbench/api/sessions/{name}/messages",
                {"content": "Hello from a signed-in agent."},
                headers=bearer(agent_token),
            )
            await client.wait("the agent's reply", lambda: len(client.events("customer")) == 6)
            assert [e["type"] for e in client.events("customer")] == [
                "new_message",
                "new_message",
                "status_change",
                "agent_joined",
                "status_change",
                "new_message",
            ]
            assert client.events("customer")[-1]["payload"]["message"]["agent_id"] == AGENT
            await client.wait("the agent's events", lambda: len(client.events("agent")) == 2)
            assert [e["type"] for e in client.events("agent")] == ["transfer_request", "status_change"]
            # Streams carried the token in the query (EventSource cannot send headers). Each
            # refused stream was opened once: when EventSource gave up, the module asked the API
            # first, and its 4xx stopped the stream instead of a reopening.
            assert [o["token"] for o in client.opens(customer["path"])] == [True, False]
            assert [o["token"] for o in client.opens(agent["path"])] == [True, True]
            assert client.of("state", "intruder")[-2]["state"] == "reconnecting"
        finally:
            await client.stop()


# --- the Python client of the guide -----------------------------------------------------------


def guide_python_client() -> dict[str, Any]:
    """Run the guide's Python example (its first ``python`` block) as a module of its own."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    assert blocks, "docs/clients.md has no python block"
    namespace: dict[str, Any] = {"__name__": "clients_md_example"}
    exec(compile(blocks[0], f"{GUIDE}:python", "exec"), namespace)  # our own doc
    assert callable(namespace.get("follow")), "the guide's example defines no follow()"
    return namespace


# Reads every page of a transcript and of the queue with the module's api.all, at a small page
# size (so that it follows cursors), and prints what it got.
PAGES_SCRIPT = """
import { createApi } from %(module)s;
const [base, name] = process.argv.slice(1);
const api = createApi({ base });
const transcript = await api.all(`/chatbot/api/sessions/${name}/messages`, 'messages', { limit: 100 });
const queue = await api.all('/workbench/api/sessions?status=waiting_agent', 'sessions', { limit: 10 });
const capped = await api.all('/workbench/api/sessions?status=waiting_agent', 'sessions', { limit: 10, maxPages: 2 });
const ids = (got) => ({ complete: got.complete, items: got.items.map((x) => x.id || x.session_name) });
console.log(JSON.stringify({ transcript: ids(transcript), queue: ids(queue), capped: ids(capped) }));
"""


async def test_js_api_reads_every_page(node: str, server_process: StartServer) -> None:
    """``api.all`` (what the console reads transcripts and held conversations with) follows
    ``next_cursor`` to the end, and stops at ``maxPages`` saying the listing is incomplete."""
    server = await run(server_process, "--insecure", "--no-redis", "--start-rate", "1000000")
    name = "js-pages"
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        for index in range(115):  # 230 messages: the customer's and the bot's
            await chat(http, name, f"hello {index}", base=server.url)
        waiting = [f"js-wait-{index:02d}" for index in range(25)]
        for waiter in waiting:
            await call(
                http, "POST", f"{server.url}/chatbot/api/sessions", {"session_name": waiter}, status=201
            )
            await call(http, "POST", f"{server.url}/chatbot/api/manual/escalate", {"session_name": waiter})
        whole = await call(http, "GET", f"{server.url}/chatbot/api/sessions/{name}/messages?limit=1000")
    script = PAGES_SCRIPT % {"module": json.dumps(MODULE.as_uri())}
    done = await run(
        subprocess.run,
        [node, "--input-type=module", "-e", script, server.url, name],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["transcript"] == {"complete": True, "items": [m["id"] for m in whole["messages"]]}
    assert len(got["transcript"]["items"]) == 230
    assert got["queue"] == {"complete": True, "items": waiting}
    assert got["capped"] == {"complete": False, "items": waiting[:20]}


async def test_python_client_from_the_guide(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    follow = guide_python_client()["follow"]
    name = "py-demo"
    common = ("--insecure", "--redis-url", redis_url)
    a, b, short = await asyncio.gather(
        run(server_process, *common, env=REDIS_ON),
        run(server_process, *common, env=REDIS_ON),
        run(server_process, *common, "--history-size", "1", env=REDIS_ON),
    )
    events: list[tuple[str | None, dict[str, Any]]] = []
    refetches: list[list[str]] = []
    tick = asyncio.Event()

    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        await call(http, "POST", f"{a.url}/chatbot/api/sessions", {"session_name": name}, status=201)

        async def on_event(event_id: str | None, event: dict[str, Any]) -> None:
            events.append((event_id, event))
            tick.set()

        async def on_resync() -> None:
            transcript = await call(http, "GET", f"{a.url}/chatbot/api/sessions/{name}/messages")
            refetches.append([m["id"] for m in transcript["messages"]])
            tick.set()

        async def until(what: str, ready: Callable[[], bool], timeout: float = WAIT) -> None:
            done = await until_signalled(ready, tick, timeout=timeout, stop=following.done)
            assert done, (what, events[-10:], following)

        def ids() -> list[str]:
            return [i for i, e in events if i and e["type"] != "connected"]

        def connected() -> list[tuple[str | None, dict[str, Any]]]:
            return [(i, e) for i, e in events if e["type"] == "connected"]

        following = asyncio.create_task(
            follow(f"{a.url}/chatbot/api/sessions/{name}/events", on_event, on_resync, heartbeat=30.0)
        )
        try:
            await until("connected", lambda: bool(connected()) and bool(refetches))
            start = connected()[0][0]
            assert start is not None and refetches == [[]]
            await chat(http, name, "Hello", base=a.url)
            await until("the bot's answer", lambda: len(ids()) == 2)

            last = ids()[-1]
            assert await run(a.stop) == 0
            await chat(http, name, "Are you there?", base=b.url)  # while A is away
            await run(a.start)
            await until("resumed", lambda: len(connected()) == 2 and len(ids()) == 4)
            assert connected()[1][0] == last and connected()[1][1]["payload"]["recovered"] is True
            await chat(http, name, "Thanks", base=a.url)
            await until("live again", lambda: len(ids()) == 6)
            assert ids() == await history_ids(redis, [f"sse:session:{name}"], start)
            assert len(refetches) == 1  # resumed from the replay: nothing refetched

            # The history stops reaching back while the client is away: it refetches.
            await call(http, "POST", f"{a.url}/workbench/api/sessions/{name}/takeover", {"agent_id": AGENT})
            await until("the takeover", lambda: len(ids()) == 8)
            last = ids()[-1]
            assert await run(a.stop) == 0
            await trim_history_past(
                redis,
                f"sse:session:{name}",
                last,
                lambda i: agent_say(http, name, AGENT, f"Filler {i}", base=short.url),
            )
            await run(a.start)
            await until("told", lambda: len(connected()) == 3 and len(refetches) == 2)
            assert connected()[2][1]["payload"]["recovered"] is False
            transcript = await call(http, "GET", f"{a.url}/chatbot/api/sessions/{name}/messages")
            assert refetches[1] == [m["id"] for m in transcript["messages"]]
            await agent_say(http, name, AGENT, "Back to normal.", base=a.url)
            await until(
                "live after the refetch",
                lambda: (
                    events[-1][1]["type"] == "new_message"
                    and events[-1][1]["payload"]["message"]["content"] == "Back to normal."
                ),
            )
            assert_strictly_increasing(ids())
        finally:
            following.cancel()
            with suppress(asyncio.CancelledError):
                await following
