"""The router's timers across processes (docs/routing.md; app/domain/routing/router.py): the
wait timeout sends a waiting conversation back to the bot, and the customer idle timer closes a
conversation whose customer is gone; every timer lives in Redis (the session's waiting_since,
the presence set), survives a process killed with SIGKILL, and fires exactly once although
every process serving the workbench runs the router each second.

Three real run.py processes share one real redis-server. Thirty conversations are started
through them in turn, twenty of them escalated; the customers of some keep a stream open (on
any of the three; those whose process dies reconnect elsewhere, as a browser would), the others
are gone. One process is killed (SIGKILL) after the escalations and before any deadline, then
started again. Then, bounded in time: every escalated conversation is back with the bot once,
with one notice; every conversation whose customer is gone is closed once (closed_reason
``customer_idle``, one notice), including the escalated ones whose customers left; and the
ones whose customers stayed are still open. "Once" is read three ways: the transcript's
notices, the session channel's whole history (a stream resumed from ``0-0``) and the routers'
log lines on all three processes."""

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from redis import Redis as SyncRedis

from app.domain.routing.router import IDLE_NOTICE, WAIT_TIMEOUT_NOTICE
from realtime.channels import WORKBENCH_TAG, session_channel
from tests.support.api import create, escalate, get_session, session_events, transcript
from tests.support.processes import MANY_STARTS, ServerProcess
from tests.support.redis_server import RedisServer, client_of
from tests.support.sse import SSEEvent, SSEStream, connect
from tests.support.wait import until

WAIT_TIMEOUT = 3.0
CUSTOMER_IDLE = 6.0
# How often a chatbot process reports the customers it holds streams of (handlers/routing.py).
REPORT_EVERY = min(CUSTOMER_IDLE / 4, 30.0)
FLAGS = (
    "--wait-timeout",
    str(WAIT_TIMEOUT),
    "--customer-idle",
    str(CUSTOMER_IDLE),
    "--rate-limit",
    "1000",
    "--rate-burst",
    "1000",
    *MANY_STARTS,
)
# The groups of conversations: escalated or not, and whether the customer stays.
STAYING_WAITERS = 12  # escalated, stream open: back to the bot once, stays open
LEAVING_WAITERS = 8  # escalated, customer gone: back to the bot once, then closed once
STAYING_CHATTERS = 5  # with the bot, stream open: untouched
LEAVING_CHATTERS = 5  # with the bot, customer gone: closed once
# A bound on reaching the end state after the kill: the later of the two deadlines, plus the
# presence report interval, a router round, a restart and slack for a loaded machine.
SETTLE_TIMEOUT = WAIT_TIMEOUT + CUSTOMER_IDLE + REPORT_EVERY + 8.0
REPLAY_QUIET = 0.7  # a replayed history is sent at once: this long quiet, it is all there
BACK_TO_BOT_LOG = re.compile(r"(\S+) waited \d+ s: back to the bot")
IDLE_CLOSED_LOG = re.compile(r"(\S+) closed: its customer was away")


@dataclass
class Conversation:
    name: str
    escalated: bool
    stays: bool  # the customer keeps a stream open
    started_on: ServerProcess
    watched_on: ServerProcess | None = None
    stream: SSEStream | None = None
    reopened: int = 0

    @property
    def end_status(self) -> str:
        return "bot_active" if self.stays else "closed"


@dataclass
class Cast:
    conversations: list[Conversation] = field(default_factory=list)

    def where(self, *, escalated: bool | None = None, stays: bool | None = None) -> list[Conversation]:
        return [
            c
            for c in self.conversations
            if (escalated is None or c.escalated == escalated) and (stays is None or c.stays == stays)
        ]


def plan(servers: list[ServerProcess]) -> Cast:
    groups = (
        [(True, True)] * STAYING_WAITERS
        + [(True, False)] * LEAVING_WAITERS
        + [(False, True)] * STAYING_CHATTERS
        + [(False, False)] * LEAVING_CHATTERS
    )
    cast = Cast()
    for n, (escalated, stays) in enumerate(groups):
        kind = ("wait" if escalated else "chat") + ("-stay" if stays else "-gone")
        cast.conversations.append(
            Conversation(f"timer-{kind}-{n}", escalated, stays, started_on=servers[n % len(servers)])
        )
    return cast


async def watch(http: aiohttp.ClientSession, conversation: Conversation, server: ServerProcess) -> None:
    """The customer's stream, on ``server`` (held open until closed)."""
    stream, _ = await connect(http, f"{server.url}{session_events(conversation.name)}")
    conversation.stream, conversation.watched_on = stream, server


def unwatch(conversation: Conversation) -> None:
    if conversation.stream is not None:
        conversation.stream.response.close()
        conversation.stream = None


async def status_of(http: aiohttp.ClientSession, server: ServerProcess, names: list[str]) -> dict[str, str]:
    sessions = await asyncio.gather(*(get_session(http, name, base=server.url) for name in names))
    return {s["session_name"]: s["status"] for s in sessions}


async def history_of(http: aiohttp.ClientSession, server: ServerProcess, name: str) -> list[SSEEvent]:
    """The session channel's whole history: a workbench stream (no customer presence) resumed
    from the first id there is, read until it goes quiet."""
    url = f"{server.url}{session_events(name, 'workbench')}"
    stream, connected = await connect(http, url, headers={"Last-Event-ID": "0-0"})
    try:
        # Complete from the first id (a channel nothing was ever published on has no history
        # to resume from: such a conversation is checked on Redis instead).
        assert connected.payload.get("recovered") is True, (name, connected.data)
        return await stream.drain(REPLAY_QUIET, limit=200, timeout=10.0)
    finally:
        stream.response.close()


def status_changes(events: list[SSEEvent]) -> list[tuple[str, str]]:
    return [(e.payload["previous_status"], e.payload["status"]) for e in events if e.type == "status_change"]


def notices_in(events: list[SSEEvent], content: str) -> int:
    return sum(
        1
        for e in events
        if e.type == "new_message"
        and e.payload["message"]["role"] == "bot"
        and e.payload["message"]["content"] == content
    )


async def check_once(
    http: aiohttp.ClientSession, server: ServerProcess, redis: SyncRedis, c: Conversation
) -> None:
    """Each timer of ``c`` acted once: in its state, its transcript and its channel's history."""
    session = await get_session(http, c.name, base=server.url)
    messages = await transcript(http, c.name, base=server.url)
    bot_said = Counter(m["content"] for m in messages if m["role"] == "bot")
    if c.escalated or not c.stays:
        history = await history_of(http, server, c.name)
    else:  # nothing ever happened in the conversation: no history at all
        assert not redis.exists(f"history:{session_channel(c.name)}"), c.name
        history = []
    changes = status_changes(history)
    what = (c.name, changes, dict(bot_said))
    assert bot_said[WAIT_TIMEOUT_NOTICE] == (1 if c.escalated else 0), what
    assert notices_in(history, WAIT_TIMEOUT_NOTICE) == (1 if c.escalated else 0), what
    assert bot_said[IDLE_NOTICE] == (0 if c.stays else 1), what
    assert notices_in(history, IDLE_NOTICE) == (0 if c.stays else 1), what
    expected: list[tuple[str, str]] = []
    if c.escalated:
        expected += [("bot_active", "waiting_agent"), ("waiting_agent", "bot_active")]
    if not c.stays:
        expected.append(("bot_active", "closed"))
    assert changes == expected, what
    if c.stays:
        assert session["status"] == "bot_active" and session.get("closed_reason") is None, session
    else:
        assert session["status"] == "closed" and session["closed_reason"] == "customer_idle", session
    if c.escalated:
        assert session["escalation_reason"] == "wait_timeout", session


def log_counts(servers: list[ServerProcess], pattern: re.Pattern[str]) -> Counter[str]:
    return Counter(m.group(1) for server in servers for m in pattern.finditer(server.log()))


async def test_timers_fire_once_across_three_processes_with_one_killed(
    redis_server: RedisServer, server_process: Callable[..., ServerProcess]
) -> None:
    env = {"REDIS_URL": redis_server.url}
    servers = [server_process(*FLAGS, env=env) for _ in range(3)]
    a, b, doomed = servers
    redis = client_of(redis_server.port)
    cast = plan(servers)
    waiters = cast.where(escalated=True)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(*(create(http, c.name, base=c.started_on.url) for c in cast.conversations))
            started = loop.time()
            staying = cast.where(stays=True)
            await asyncio.gather(*(watch(http, c, servers[(i + 2) % 3]) for i, c in enumerate(staying)))
            await asyncio.gather(
                *(escalate(http, c.name, base=servers[(i + 1) % 3].url) for i, c in enumerate(waiters))
            )
            escalated = loop.time()
            # Let every process report the customers it saw start (each reports every
            # REPORT_EVERY): the kill below is about the timers, not about a report not made
            # yet (test_presence_of_a_new_customer_survives_its_process covers that).
            await asyncio.sleep(max(0.0, started + REPORT_EVERY + 0.5 - loop.time()))
            # Before any deadline: every escalated conversation is still waiting.
            assert loop.time() - escalated < WAIT_TIMEOUT - 0.3, "too slow to kill before the deadlines"
            before = await status_of(http, a, [c.name for c in waiters])
            assert set(before.values()) == {"waiting_agent"}, before
            doomed.kill()
            killed = loop.time()
            # The customers whose streams were on the dead process reconnect elsewhere.
            for i, c in enumerate(c for c in staying if c.watched_on is doomed):
                unwatch(c)
                await watch(http, c, (a, b)[i % 2])
                c.reopened += 1
            assert any(c.reopened for c in staying), "no stream was on the killed process"
            doomed.start()  # same port; its router joins the others again

            names = [c.name for c in cast.conversations]
            wanted = {c.name: c.end_status for c in cast.conversations}

            async def statuses() -> dict[str, str]:
                return await status_of(http, b, names)

            def settled(seen: dict[str, str]) -> bool:
                return seen == wanted

            await until(
                statuses,
                settled,
                timeout=SETTLE_TIMEOUT,
                interval=0.25,
                what="every escalated conversation back with the bot, every gone customer's closed",
                describe=lambda seen: {n: s for n, s in (seen or {}).items() if wanted[n] != s},
            )
            settle_seconds = loop.time() - killed
            # The staying customers outlast another report interval and router rounds past the
            # idle deadline of those who left.
            await asyncio.sleep(REPORT_EVERY + 1.0)
            after = await status_of(http, doomed, [c.name for c in staying])
            assert set(after.values()) == {"bot_active"}, after
            assert all(c.stream is not None and not c.stream.response.closed for c in staying)

            await asyncio.gather(
                *(check_once(http, servers[n % 3], redis, c) for n, c in enumerate(cast.conversations))
            )
        finally:
            for c in cast.conversations:
                unwatch(c)
            redis.close()

    # The routers acted once per timer, all processes together (the killed one's log too).
    timed_out = log_counts(servers, BACK_TO_BOT_LOG)
    idle_closed = log_counts(servers, IDLE_CLOSED_LOG)
    assert timed_out == Counter(c.name for c in waiters), timed_out
    assert idle_closed == Counter(c.name for c in cast.where(stays=False)), idle_closed
    assert settle_seconds < SETTLE_TIMEOUT


# A customer who starts a conversation on a process that dies before its first report.
LOST_IDLE = 8.0  # reports every 2 s: the kill below comes well before the first one
LOST_FLAGS = ("--customer-idle", str(LOST_IDLE), *MANY_STARTS)
LOST_TIMEOUT = LOST_IDLE + LOST_IDLE / 4 + 4.0
SEEN_KEY = f"customers_seen:{{{WORKBENCH_TAG}}}"  # app/domain/routing/customers.py


async def test_presence_of_a_new_customer_survives_its_process(
    redis_server: RedisServer, server_process: Callable[..., ServerProcess]
) -> None:
    """Started on a process that is killed at once (before it reports its customers), and
    never visited again by its customer: closed by another process after --customer-idle."""
    env = {"REDIS_URL": redis_server.url}
    survivor = server_process(*LOST_FLAGS, env=env)
    doomed = server_process(*LOST_FLAGS, env=env)  # just started: its first report is 2 s away
    names = [f"timer-lost-{n}" for n in range(3)]
    presence = client_of(redis_server.port, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(create(http, name, base=doomed.url) for name in names))
            doomed.kill()

            async def statuses() -> dict[str, str]:
                return await status_of(http, survivor, names)

            await until(
                statuses,
                lambda seen: set(seen.values()) == {"closed"},
                timeout=LOST_TIMEOUT,
                interval=0.25,
                what="the conversations of a customer gone with its process closed as idle",
                describe=lambda seen: (seen, "customers_seen holds", presence.zrange(SEEN_KEY, 0, -1)),
            )
    finally:
        presence.close()
