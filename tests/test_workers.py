"""``--workers N`` and ``--event-loop``, on real ``run.py`` processes and the suite's real
redis-server, everything on 127.0.0.1 and every wait bounded.

What these tests prove: N workers share one port (connections reach different pids) and share
events only through Redis (a message reaches every stream of a session whichever worker holds
it); SIGTERM to the supervisor stops every worker and frees the port, exit status 0; a worker
killed outright is replaced, one that keeps dying makes the supervisor give up; workers die with
a supervisor killed outright; a first start that fails ends with the worker's status; settings
that cannot work are refused with status 2; and the server runs (and streams) on uvloop.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support.api import call, chat, create
from tests.support.processes import REDIS_ON, ServerProcess, StartServer
from tests.support.sse import SSEStream, open_stream
from tests.support.wait import eventually

pytestmark = pytest.mark.timeout(60)


REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=5)
HEALTH_TRIES = 100  # new connections until both workers answered (each one 1 in 2)
MAX_STREAMS = 16  # streams opened until both workers hold one of the session
WAIT = 10.0


# --- helpers -------------------------------------------------------------------------------


def fresh_connections() -> aiohttp.ClientSession:
    """A client that opens a new connection per request, so the kernel spreads them."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), timeout=REQUEST_TIMEOUT)


def child_pids(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(child) for child in text.split()}


def alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever reaps orphans here counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def health_pid(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/health") as response:
        assert response.status == 200, response.status
        return int((await response.json())["pid"])


async def pids_answering(
    http: aiohttp.ClientSession, url: str, wanted: set[int], tries: int = HEALTH_TRIES
) -> set[int]:
    """Ask /health on new connections until every pid of ``wanted`` answered (bounded)."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(await health_pid(http, url))
        if wanted <= seen:
            break
    return seen


async def worker_pids(server: ServerProcess, count: int = 2, without: int | None = None) -> set[int]:
    """The supervisor's ``count`` workers, once it has that many (none of them ``without``)
    and all have listened: /health answering (ServerProcess.start) means one did."""
    assert server.process is not None
    assert await eventually(lambda: f"all {count} workers are serving" in server.log(), timeout=WAIT), (
        server.log()
    )
    supervisor = server.process.pid

    def complete() -> set[int] | None:
        pids = child_pids(supervisor)
        return pids if len(pids) == count and without not in pids else None

    pids = await eventually(complete, timeout=WAIT)
    assert isinstance(pids, set), (child_pids(supervisor), server.log())
    return pids


async def numsub(redis: Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


async def stopped(server: ServerProcess, timeout: float) -> int | None:
    """The supervisor's exit status if it ends within ``timeout``, else None."""
    assert server.process is not None
    try:
        status = await asyncio.to_thread(server.process.wait, timeout)
    except subprocess.TimeoutExpired:
        return None
    server.returncode = status
    return status


# --- 1. two workers, one port, one Redis ------------------------------------------------------


async def test_two_workers_share_the_port_and_every_stream_gets_the_event(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    """/health on new connections reaches both workers; streams of one session spread over
    both (each worker subscribes the channel once in Redis); an agent message published
    through either worker reaches every stream."""
    server = server_process("--workers", "2", "--redis-url", redis_url, env=REDIS_ON)
    workers = await worker_pids(server)
    name, agent = "spread-1", "agent-9"
    channel = f"sse:session:{name}"
    async with fresh_connections() as http, contextlib.AsyncExitStack() as stack:
        assert await pids_answering(http, server.url, workers) == workers

        await call(http, "POST", f"{server.url}/chatbot/api/sessions", {"session_name": name}, status=201)
        streams: list[SSEStream] = []
        for _ in range(MAX_STREAMS):
            stream, connected = await stack.enter_async_context(
                open_stream(http, f"{server.url}/chatbot/api/sessions/{name}/events")
            )
            assert connected.payload["channels"] == [channel], connected
            streams.append(stream)
            if len(streams) >= 4 and await numsub(redis, channel) == 2:
                break
        # One pub/sub subscription per worker holding a stream of the session: both do.
        assert await numsub(redis, channel) == 2, (len(streams), server.log())

        await call(http, "POST", f"{server.url}/workbench/api/sessions/{name}/takeover", {"agent_id": agent})
        sent = await call(
            http,
            "POST",
            f"{server.url}/workbench/api/sessions/{name}/messages",
            {"agent_id": agent, "content": "Hello from either worker."},
        )
        for stream in streams:
            event = await stream.next_of("new_message")
            message = event.payload["message"]
            assert message["id"] == sent["message"]["id"], (message, sent)
            assert message["role"] == "agent" and message["agent_id"] == agent, message
            assert message["content"] == "Hello from either worker.", message
    assert all(alive(pid) for pid in workers), server.log()


# --- 2. stopping --------------------------------------------------------------------------------


async def test_sigterm_stops_every_worker_and_frees_the_port(
    server_process: StartServer, redis_url: str
) -> None:
    """SIGTERM to the supervisor, with a stream open: the stream ends, every worker exits, the
    supervisor exits 0 within 10 s and the port can be listened on again."""
    server = server_process("--workers", "2", "--redis-url", redis_url, env=REDIS_ON)
    workers = await worker_pids(server)
    assert server.process is not None
    async with fresh_connections() as http:
        await call(http, "POST", f"{server.url}/chatbot/api/sessions", {"session_name": "bye"}, status=201)
        async with open_stream(http, f"{server.url}/chatbot/api/sessions/bye/events") as (stream, _connected):
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            status = await stopped(server, 10.0)
            took = time.monotonic() - started
            with contextlib.suppress(EOFError, aiohttp.ClientError, TimeoutError):
                for _ in range(10):
                    await stream.next(timeout=1.0)
    assert status == 0, server.log()
    assert took < 10.0, took
    assert not any(alive(pid) for pid in workers), (workers, server.log())
    assert port_is_free(server.port)
    assert "SIGTERM: stopping 2 workers" in server.log()
    assert "SIGKILL" not in server.log(), server.log()


async def test_workers_die_with_a_killed_supervisor(server_process: StartServer, redis_url: str) -> None:
    """SIGKILL to the supervisor (no chance to forward anything): the workers still go."""
    server = server_process("--workers", "2", "--redis-url", redis_url, env=REDIS_ON)
    workers = await worker_pids(server)
    assert server.process is not None
    server.process.kill()
    assert await stopped(server, 5.0) == -signal.SIGKILL
    gone = await eventually(lambda: not any(alive(pid) for pid in workers), timeout=WAIT)
    assert gone, (workers, server.log())
    assert await eventually(lambda: port_is_free(server.port), timeout=WAIT), server.log()


# --- 3. restarting ------------------------------------------------------------------------------


async def test_a_killed_worker_is_replaced(server_process: StartServer, redis_url: str) -> None:
    """A worker SIGKILLed is restarted: a new pid answers /health, the other one lived on."""
    server = server_process("--workers", "2", "--redis-url", redis_url, env=REDIS_ON)
    before = await worker_pids(server)
    assert server.process is not None
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    after = await worker_pids(server, without=victim)
    [replacement] = after - before
    async with fresh_connections() as http:
        seen: set[int] = set()
        for _ in range(int(WAIT / 0.1)):  # the replacement may still be starting
            with contextlib.suppress(aiohttp.ClientError):
                seen |= await pids_answering(http, server.url, after, tries=20)
            if after <= seen:
                break
            await asyncio.sleep(0.1)
    assert replacement in seen and victim not in seen, (seen, server.log())
    assert server.process.poll() is None, server.log()
    assert f"(pid {victim}) died (killed by SIGKILL): restarting it" in server.log()


async def test_a_worker_that_keeps_dying_makes_the_supervisor_give_up(
    server_process: StartServer, redis_url: str
) -> None:
    """Five deaths within 30 s: the supervisor stops the rest and exits 1 (no endless loop)."""
    server = server_process("--workers", "2", "--redis-url", redis_url, env=REDIS_ON)
    await worker_pids(server)
    process = server.process
    assert process is not None
    killed: set[int] = set()
    for _ in range(5):
        victims = await eventually(lambda: child_pids(process.pid) - killed, timeout=WAIT)
        assert victims, server.log()
        victim = min(victims)
        os.kill(victim, signal.SIGKILL)
        killed.add(victim)
    assert await stopped(server, WAIT) == 1, server.log()
    assert "giving up" in server.log()
    assert await eventually(lambda: port_is_free(server.port), timeout=WAIT), server.log()


# --- 4. refusals and failed starts -------------------------------------------------------------


def test_workers_without_redis_are_refused(tmp_path: Path) -> None:
    """--workers 2 --no-redis: events could not cross workers; status 2 and why."""
    server = ServerProcess(["--workers", "2", "--no-redis"], env=None, log_dir=tmp_path)
    done = server.run()
    assert done.returncode == 2, done
    assert "--workers needs Redis" in done.stderr, done.stderr


def test_first_start_failure_ends_with_the_workers_status(tmp_path: Path, redis_url: str) -> None:
    """Workers that refuse to start (no secret, not insecure): the supervisor stops and exits
    with their status 2, the reason in the log, no traceback."""
    server = ServerProcess(
        ["--workers", "2", "--redis-url", redis_url],
        env={**REDIS_ON, "SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": ""},
        log_dir=tmp_path,
    )
    done = server.run()
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "refusing to start without a token secret" in output, output
    assert "failed at start (exit status 2)" in output, output
    assert "Traceback" not in output, output


def test_workers_refuse_a_port_already_in_use(tmp_path: Path, redis_url: str) -> None:
    """Somebody listens on the port: the supervisor says so and exits 1, starting nothing
    (workers with SO_REUSEPORT must not end up sharing it with another server)."""
    server = ServerProcess(["--workers", "2", "--redis-url", redis_url], env=REDIS_ON, log_dir=tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", server.port))
        holder.listen(1)
        done = server.run()
    assert done.returncode == 1, done
    assert "Address already in use" in done.stderr, done.stderr
    assert "worker 0 started" not in done.stderr, done.stderr


# --- 5. the event loop --------------------------------------------------------------------------


async def test_uvloop_serves_a_session_and_its_stream(server_process: StartServer, redis_url: str) -> None:
    """--event-loop uvloop: the log names uvloop, and a session with its stream work (Redis)."""
    server = server_process("--event-loop", "uvloop", "--redis-url", redis_url, env=REDIS_ON)
    assert "(event loop: uvloop)" in server.log(), server.log()
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as http:
        await create(http, "uv", base=server.url)
        async with open_stream(http, f"{server.url}/chatbot/api/sessions/uv/events") as (stream, _connected):
            await chat(http, "uv", "hi", base=server.url)
            said, bot = await stream.take(2)
    assert said.type == "new_message" and said.payload["message"]["content"] == "hi", said
    assert bot.type == "new_message" and bot.payload["message"]["role"] == "bot", bot


def test_unknown_event_loop_is_refused(tmp_path: Path) -> None:
    server = ServerProcess(["--no-redis", "--event-loop", "nope"], env=None, log_dir=tmp_path)
    done = server.run()
    assert done.returncode == 2, done
    assert "event_loop must be one of asyncio, uvloop" in done.stderr, done.stderr


def test_uvloop_missing_is_refused_in_one_line(tmp_path: Path) -> None:
    """uvloop asked for but not importable (shadowed here): status 2 and the pip command."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text('raise ImportError("uvloop is shadowed by a test")\n')
    server = ServerProcess(
        ["--no-redis", "--event-loop", "uvloop"], env={"PYTHONPATH": str(shadow)}, log_dir=tmp_path
    )
    done = server.run()
    assert done.returncode == 2, done
    assert "pip install '.[uvloop]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
