"""GET /workbench/api/events: every session's events on one stream (PSUBSCRIBE sse:session:*
on one Redis; the sessions feed on a Redis Cluster), with filters and resume."""

import aiohttp
from redis.asyncio import Redis

from app.process.settings import Settings
from tests.support.api import CHATBOT, WORKBENCH, act, call, chat, create, escalate
from tests.support.app_server import AppClient, MakeClient
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import SSEEvent, SSEStream, open_stream

SUPERVISOR = f"{WORKBENCH}/events"


def session_of(event: SSEEvent) -> str:
    result: str = event.payload["session_name"]
    return result


async def take_sessions_events(stream: SSEStream, count: int) -> list[SSEEvent]:
    events = await stream.take(count)
    assert all(e.type != "connected" for e in events)
    return events


async def test_sees_sessions_created_after_it_connected(client: AppClient, backend: str) -> None:
    async with open_stream(client, SUPERVISOR) as (board, connected):
        assert connected.payload["channels"] == ["sse:session:*"]
        for name in ("s1", "s2"):
            await create(client, name)
            await chat(client, name, f"hello from {name}")
        events = await take_sessions_events(board, 4)  # each: the customer's message, the bot's
        assert [(session_of(e), e.type) for e in events] == [
            ("s1", "new_message"),
            ("s1", "new_message"),
            ("s2", "new_message"),
            ("s2", "new_message"),
        ]
        ids = [e.id for e in events if e.id is not None]
        assert len(ids) == len(events), events
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == 4
        # A broadcast (transfer_request) is not a session channel's event: not on this stream.
        await escalate(client, "s1")
        change = await board.next()
        assert change.type == "status_change" and session_of(change) == "s1"
        await board.assert_quiet()


async def test_resumes_from_last_event_id(client: AppClient, backend: str) -> None:
    await create(client, "r1")
    async with open_stream(client, SUPERVISOR) as (board, _):
        await chat(client, "r1", "one")
        seen = await take_sessions_events(board, 2)
    await create(client, "r2")
    await chat(client, "r2", "missed")
    await chat(client, "r1", "missed too")
    headers = {"Last-Event-ID": seen[-1].id or ""}
    async with open_stream(client, SUPERVISOR, headers=headers) as (board, connected):
        assert connected.payload["recovered"] is True
        replayed = await take_sessions_events(board, 4)
        assert [session_of(e) for e in replayed] == ["r2", "r2", "r1", "r1"]
        assert replayed[0].payload["message"]["content"] == "missed"
        await board.assert_quiet()


async def test_filters_by_session_and_by_status(client: AppClient, backend: str) -> None:
    for name in ("a", "b", "c"):
        await create(client, name)
    await escalate(client, "b")
    named = f"{SUPERVISOR}?session=a&sessions=c"
    waiting = f"{SUPERVISOR}?status=waiting_agent"
    async with open_stream(client, named) as (by_name, hello), open_stream(client, waiting) as (by_status, _):
        assert hello.payload["filter"] == {"status": None, "sessions": ["a", "c"]}
        for name in ("a", "b", "c"):
            await chat(client, name, f"to {name}")
        assert {session_of(e) for e in await by_name.take(4)} == {"a", "c"}
        await by_name.assert_quiet()
        # b waits: its customer message is on; a enters the queue: its change is shown, then
        # its events; b taken over: its leaving the status is shown, then nothing of b.
        said = await by_status.next()
        assert (session_of(said), said.type) == ("b", "new_message")
        await escalate(client, "a")
        entered = await by_status.next()
        assert (session_of(entered), entered.type, entered.payload["status"]) == (
            "a",
            "status_change",
            "waiting_agent",
        )
        await act(client, "b", "takeover", "alice")
        left = await by_status.next_of("status_change")
        assert (session_of(left), left.payload["status"]) == ("b", "agent_active")
        await chat(client, "b", "still there?")
        await chat(client, "a", "me too")
        after = await by_status.next()
        assert (session_of(after), after.payload["message"]["content"]) == ("a", "me too")
    bad = await call(client, "GET", f"{SUPERVISOR}?session=no*pe", status=400)
    assert bad["error"]["code"] == "validation_error"
    await call(client, "GET", f"{SUPERVISOR}?status=nope", status=400)


async def test_split_deployment_one_pattern_subscription(server_process: StartServer, redis_url: str) -> None:
    """Sessions created and driven on the chatbot process, and taken over on the workbench
    process, reach supervisors on the workbench process through one PSUBSCRIBE on its one
    pub/sub connection."""
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    async with (
        aiohttp.ClientSession() as http,
        open_stream(http, workbench.url + SUPERVISOR) as (board, _),
        open_stream(http, workbench.url + SUPERVISOR) as (second, _),
    ):
        await create(http, "split", base=chatbot.url)
        await chat(http, "split", "hello", base=chatbot.url)
        # ... and what happens on the workbench process (the takeover, the agent's words).
        await act(http, "split", "takeover", "alice", base=workbench.url)
        await call(
            http,
            "POST",
            f"{workbench.url}{WORKBENCH}/sessions/split/messages",
            {"agent_id": "alice", "content": "Alice here"},
        )
        for stream in (board, second):
            events = await take_sessions_events(stream, 5)
            assert [session_of(e) for e in events] == ["split"] * 5
            assert [e.type for e in events] == [
                "new_message",
                "new_message",
                "agent_joined",
                "status_change",
                "new_message",
            ]
            assert events[-1].payload["message"]["content"] == "Alice here"
        admin = Redis.from_url(redis_url)
        try:
            assert int(await admin.pubsub_numpat()) == 1
        finally:
            await admin.aclose()


async def test_on_a_cluster_through_the_feed(server_process: StartServer, cluster_url: str) -> None:
    """Sharded pub/sub has no patterns: the sessions feed carries every session's events."""
    chatbot = server_process("--chatbot", "--redis-url", cluster_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", cluster_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        async with open_stream(http, workbench.url + SUPERVISOR) as (board, _):
            names = ["feed-1", "feed-2", "feed-3"]
            for name in names:
                await create(http, name, base=chatbot.url)
                await chat(http, name, "hello", base=chatbot.url)
            events = await take_sessions_events(board, 6)
            assert [session_of(e) for e in events] == [n for n in names for _ in (0, 1)]
            seen = events[1].id
        async with open_stream(http, workbench.url + SUPERVISOR, headers={"Last-Event-ID": seen or ""}) as (
            board,
            connected,
        ):
            assert connected.payload["recovered"] is True
            resumed = await take_sessions_events(board, 4)
            assert [session_of(e) for e in resumed] == ["feed-2", "feed-2", "feed-3", "feed-3"]


async def test_needs_an_agent(make_client: MakeClient, settings: Settings) -> None:
    secure = await make_client(settings, insecure=False, secret="s" * 32)
    answer = await call(secure, "GET", SUPERVISOR, status=401)
    assert answer["error"]["code"] == "unauthorized"
    await call(secure, "GET", f"{CHATBOT}/events", status=404)
