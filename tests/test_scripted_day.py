"""A scripted day of routing (docs/routing.md, issue 15's "Done when"): 20 agents over two
processes, 200 conversations arriving, agents going away and offline, offers declined and
expiring, one process killed midway. Checked at the end: no conversation was ever held by two
agents, no agent was ever over capacity, every conversation ended held, back with the bot, or
closed with a reason, every customer saw its position fall, and no event answered 200 was lost.

One real redis-server and two real run.py processes, each serving both sub-apps (so the kill
takes customer streams as well as agent streams and a router with it). The day, on a clock that
starts when the processes are up (seconds):

- 0-2.5: a morning rush of RUSH customers before any agent is online: the queue is long.
- 3: 20 agents open their streams (half on each process) and go online, capacity 1, 2 or 3.
  Each agent is a small seeded "brain": an offer is accepted, declined or ignored (so it
  expires); a conversation held gets a message or two, then is closed, released to the bot,
  transferred to the queue or to another agent, or (rarely) kept to the end.
- 3-33: the other customers arrive, one every 0.2 s: create, open a stream, escalate; half
  write a message later; LEAVERS of them close their stream and never come back, and BOUNCERS
  more (in the rush) leave without asking for a person: closed by an agent or, failing that,
  as idle by --customer-idle.
- LUNCH: most agents are away (they keep their conversations, get no new ones): the queue
  grows and the longest waits go back to the bot (--wait-timeout).
- KILL: the second process is SIGKILLed; every stream that was on it reconnects to the first
  with Last-Event-ID (as EventSource does), agents within --agent-grace; it is started again.
- SIGN_OFF: two agents sign off (offline), two others drop their stream for good (offline by
  --agent-grace): what they held goes back to the front of the queue.
- From 34, closing time: agents accept everything and close what they hold; the queue empties.

Every HTTP call that publishes and answered 200 is recorded with what it should have published;
the invariants are sampled every SAMPLE_EVERY during the day (the registry's count and the
sessions' holders and offers, per agent, against its capacity); and at the end every session's
whole history (a stream resumed from 0-0), its transcript, every stream each client read (all
its connections) and the processes' /metrics are compared with them:

- two holders: each history, walked event by event, never has an agent join while another
  holds, nor a status change that does not start where the last one ended; an agent's message
  lies inside its holding; a conversation is offered to one agent at a time;
- capacity: walked in event id order (one clock), no agent ever held more than its capacity;
- ends: every conversation is held (by an agent still there), back with the bot (released, or
  timed out with its notice), or closed (by an agent, or as idle: a customer who left); none
  waits; an agent-offline re-queue has its notice, and only agents who left caused one;
- places: between two queue_updates a customer's position never rose by more than the
  conversations put back at the front of the queue meanwhile; one placed further back than
  every agent's capacity together saw it fall before its wait ended, and was taken within it;
- nothing lost: every action answered 200 is in the history (and a message in the transcript
  too), every customer's stream read exactly the history (the same ids, in order, across the
  kill), every agent's stream read its channels' history from where it started, a transfer's
  offer reached its agent, and a customer's message reached the agent holding the conversation.

The day found a race (an agent offered past its capacity: a conversation handed back to the
queue, offered again to the same agent before the hand-back gave its count back); fixed, with
tests/test_routing.py's races as its regression tests."""

import asyncio
import bisect
import itertools
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from redis.asyncio import Redis as AsyncRedis

from app.domain.routing.router import AGENT_OFFLINE_NOTICE, TRANSFER_NOTICE, WAIT_TIMEOUT_NOTICE
from realtime.channels import WORKBENCH_TAG
from realtime.redis_replies import as_text
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    Reply,
    agent_events,
    send,
    session_events,
    transcript,
)
from tests.support.metrics import Samples, by_label, scrape
from tests.support.processes import MANY_STARTS, REDIS_ON, ServerProcess, StartServer
from tests.support.redis_server import RedisServer
from tests.support.sse import AMBIENT, SSEEvent, SSEStream, connect

SEED = 15  # issue 15
AGENT_COUNT = 20
CUSTOMERS = 200
RUSH = 50
LEAVERS = 6  # escalate, then leave
BOUNCERS = 4  # leave without escalating
OFFER_TIMEOUT = 2.0
AGENT_GRACE = 4.0
WAIT_TIMEOUT = 7.0
CUSTOMER_IDLE = 16.0
FLAGS = (
    "--insecure", "--assignment", "auto", "--offer-timeout", str(OFFER_TIMEOUT),
    "--agent-capacity", "2", "--agent-grace", str(AGENT_GRACE), "--wait-timeout", str(WAIT_TIMEOUT),
    "--customer-idle", str(CUSTOMER_IDLE), "--heartbeat", "2",
    "--history-size", "5000", "--history-bytes", str(8 * 1024 * 1024),
    "--rate-limit", "1000", "--rate-burst", "1000", *MANY_STARTS,
)  # fmt: skip

# The day's clock (seconds after the processes are up).
AGENTS_ONLINE = 3.0
ARRIVAL_EVERY = 0.2  # after the rush
LUNCH = (12.0, 21.0)
LUNCH_AGENTS = 16  # all but the four who leave later
KILL_AT, RESTART_AT = 24.0, 29.0
SIGN_OFF = 30.0
LEAVERS_ARRIVE_BEFORE = 15.0  # so that --customer-idle closes them before the end
CLOSING_TIME = 34.0  # the last arrival is at 3 + 149 * 0.2 = 32.8

# Bounds.
SETTLE_TIMEOUT = 40.0  # closing time to every conversation settled
SAMPLE_EVERY = 0.25
MAX_SAMPLES = 400
READ_TIMEOUT = 8.0  # a stream silent this long (heartbeats every 2 s) is dead
MAX_CONNECTIONS = 8  # per stream reader
ATTEMPTS = 4  # per request: another process after a refused connection
MARGIN = 1.0  # seconds between a request's answer and its event's id (Redis's clock), either way
REPLAY_QUIET = 0.7
T = TypeVar("T")
CONCURRENT_READS = 20

# + an agent's id: the conversations the registry counts against it (app/domain/agents/redis.py).
AGENT_LOAD = f"agent_load:{{{WORKBENCH_TAG}}}"

# Agents' choices.
ON_OFFER = {"accept": 76, "decline": 12, "ignore": 12}
ENDINGS = {"close": 50, "release": 14, "to_queue": 13, "to_agent": 15, "keep": 3}


def id_time(event_id: str) -> float:
    """An event id's time (unix seconds): its milliseconds, from Redis's clock."""
    return int(event_id.partition("-")[0]) / 1000


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Done:
    """An action that answered 200, and what it should have published."""

    kind: str  # escalate chat accept decline message close release to_queue to_agent status
    session: str
    agent: str | None
    sent: float  # wall time of its first attempt
    answered: float
    message_id: str | None = None
    target: str | None = None


@dataclass
class Reader:
    """A stream read as EventSource reads it: across connections (on whichever process is
    up), resumed with Last-Event-ID; every event kept with the wall time it arrived."""

    day: "Day"
    path: str
    prefer: int
    on_event: Callable[[SSEEvent], None] | None = None
    events: list[SSEEvent] = field(default_factory=list)
    updates: list[tuple[float, int | None]] = field(default_factory=list)  # queue_update
    connected: list[tuple[int, str | None, SSEEvent]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    last_id: str | None = None
    task: asyncio.Task[None] | None = None
    response: aiohttp.ClientResponse | None = None
    stopping: bool = False

    @property
    def first_position(self) -> str | None:
        return self.connected[0][2].id if self.connected else None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def opened(self, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.05)):
            if self.connected or self.task is None or self.task.done():
                break
            await asyncio.sleep(0.05)
        assert self.connected, (self.path, self.failures)

    async def _run(self) -> None:
        for _ in range(MAX_CONNECTIONS):
            index = self.day.up(self.prefer)
            headers = {"Last-Event-ID": self.last_id} if self.last_id is not None else None
            try:
                response = await self.day.http.get(
                    f"{self.day.servers[index].url}{self.path}",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=2),
                )
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                self.failures.append(f"connect {index}: {exc!r}")
                await asyncio.sleep(0.3)
                continue
            self.response = response
            try:
                if response.status != 200:
                    self.failures.append(f"{index}: {response.status} {await response.text()}")
                else:
                    await self._read(SSEStream(response, self.last_id), index)
            except (EOFError, aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                if not self.stopping:
                    self.failures.append(f"read {index}: {type(exc).__name__}")
            finally:
                response.close()
            if self.stopping:
                return
            await asyncio.sleep(self.day.rng.uniform(0.2, 0.8))
        self.failures.append("gave up")

    async def _read(self, stream: SSEStream, index: int) -> None:
        sent = self.last_id
        while not self.stopping:
            event = await stream.next(READ_TIMEOUT)
            if event.type == "connected":
                self.connected.append((index, sent, event))
            elif event.type == "queue_update":
                self.updates.append((time.time(), event.payload["position"]))
            elif event.id is not None:
                self.events.append(event)
                if self.on_event is not None:
                    self.on_event(event)
            self.last_id = stream.last_event_id

    async def stop(self) -> None:
        self.stopping = True
        if self.response is not None:
            self.response.close()
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task


@dataclass
class Customer:
    index: int
    name: str
    arrives: float
    leaves: bool
    escalates: bool
    says: bool
    reader: Reader | None = None
    left_at: float | None = None


@dataclass
class Agent:
    agent_id: str
    capacity: int
    home: int
    lunch: bool
    fate: str  # stays, signs_off, drops
    rng: random.Random
    reader: Reader | None = None
    offers: asyncio.Queue[SSEEvent] = field(default_factory=asyncio.Queue)
    holds: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    gone_at: float | None = None
    status: str = "offline"
    choices: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)


@dataclass
class Day:
    http: aiohttp.ClientSession
    servers: list[ServerProcess]
    rng: random.Random
    redis: AsyncRedis  # to tell the known bug from others (the registry's own count)
    started: float = 0.0
    down: set[int] = field(default_factory=set)
    done: list[Done] = field(default_factory=list)
    # The endings agents asked for (answered or not: a process killed after committing one
    # never answers it, and the agent's retry elsewhere gets a 409).
    tried: set[tuple[str, str, str]] = field(default_factory=set)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    closing: bool = False
    stopping: bool = False
    agents: dict[str, Agent] = field(default_factory=dict)
    customers: list[Customer] = field(default_factory=list)
    retried: int = 0
    samples: int = 0
    killed_metrics: Samples = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def up(self, prefer: int) -> int:
        index = prefer % len(self.servers)
        return index if index not in self.down else 1 - index

    def clock(self) -> float:
        return time.monotonic() - self.started

    async def at(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, moment - self.clock()))

    def problem(self, kind: str, what: object) -> None:
        self.problems[kind].append(str(what)[:600])

    async def request(
        self, prefer: int, method: str, path: str, body: Any = None
    ) -> tuple[Reply | None, float]:
        """One request on the process preferred, or the other when that one is down or does
        not answer (a few attempts); the reply (None if none came) and when it was first sent."""
        sent = time.time()
        for attempt in range(ATTEMPTS):
            base = self.servers[self.up(prefer + attempt)].url
            try:
                reply = await send(self.http, method, f"{base}{path}", body, timeout=8.0)
            except (aiohttp.ClientError, ConnectionError, TimeoutError):
                self.retried += 1
                await asyncio.sleep(0.2)
                continue
            if reply.status >= 500:
                self.problem("5xx", (method, path, body, reply.status, reply.body))
            return reply, sent
        return None, sent

    def record(self, kind: str, session: str, agent: str | None, sent: float, **more: Any) -> None:
        self.done.append(Done(kind, session, agent, sent, time.time(), **more))

    def online(self) -> list[str]:
        return [a.agent_id for a in self.agents.values() if a.status == "online" and a.gone_at is None]


# --- the cast ------------------------------------------------------------------------------


def cast(day: Day) -> None:
    rng = day.rng
    ids = [f"agent-{n:02d}" for n in range(AGENT_COUNT)]
    capacities = {a: (1 if n < 3 else 3 if n < 6 else 2) for n, a in enumerate(ids)}
    # Who goes to lunch, who signs off, who drops its stream: never the same agents.
    shuffled = rng.sample(ids, len(ids))
    leaving = {shuffled[0]: "signs_off", shuffled[1]: "signs_off", shuffled[2]: "drops", shuffled[3]: "drops"}
    lunch = set(shuffled[4 : 4 + LUNCH_AGENTS])
    for n, agent_id in enumerate(ids):
        day.agents[agent_id] = Agent(
            agent_id,
            capacities[agent_id],
            home=n % 2,
            lunch=agent_id in lunch,
            fate=leaving.get(agent_id, "stays"),
            rng=random.Random(f"{SEED}-{agent_id}"),
        )
    arrivals = [n * 0.05 for n in range(RUSH)] + [
        AGENTS_ONLINE + n * ARRIVAL_EVERY for n in range(CUSTOMERS - RUSH)
    ]
    early = [n for n, t in enumerate(arrivals) if t < LEAVERS_ARRIVE_BEFORE and n >= RUSH]
    leavers = set(rng.sample(early, LEAVERS))
    bouncers = set(rng.sample(range(5, RUSH), BOUNCERS))
    for n, t in enumerate(arrivals):
        leaves = n in leavers or n in bouncers
        says = not leaves and rng.random() < 0.5
        day.customers.append(Customer(n, f"day-{n:03d}", t, leaves, escalates=n not in bouncers, says=says))


# --- the customers -------------------------------------------------------------------------


async def customer(day: Day, c: Customer) -> None:
    await day.at(c.arrives)
    reply, _ = await day.request(c.index, "POST", f"{CHATBOT}/sessions", {"session_name": c.name})
    # 409 session_exists: a retry after a connection lost once the first attempt had created it.
    if reply is None or reply.status not in (201, 409):
        day.problem("customer", (c.name, "create", reply))
        return
    c.reader = Reader(day, session_events(c.name), prefer=c.index + 1)
    c.reader.start()
    await c.reader.opened()
    if not c.escalates:
        await asyncio.sleep(day.rng.uniform(0.5, 1.5))
        await c.reader.stop()
        c.left_at = time.time()
        return
    reply, sent = await day.request(c.index, "POST", f"{CHATBOT}/manual/escalate", {"session_name": c.name})
    if reply is None or reply.status != 200:
        day.problem("customer", (c.name, "escalate", reply))
        return
    day.record("escalate", c.name, None, sent)
    if c.leaves:
        await asyncio.sleep(day.rng.uniform(0.5, 1.5))
        await c.reader.stop()
        c.left_at = time.time()
        return
    if c.says:
        await asyncio.sleep(day.rng.uniform(0.5, 5.0))
        body = {"session_name": c.name, "content": f"My order {c.index} has not arrived yet."}
        reply, sent = await day.request(c.index, "POST", f"{CHATBOT}/chat", body)
        if reply is not None and reply.status == 200:
            day.record("chat", c.name, None, sent, message_id=reply.body["message"]["id"])
        elif reply is None or reply.status != 409:  # 409: closed meanwhile
            day.problem("customer", (c.name, "chat", reply))


# --- the agents ----------------------------------------------------------------------------


async def set_status(day: Day, agent: Agent, status: str) -> None:
    body = {"status": status, "capacity": agent.capacity}
    reply, sent = await day.request(agent.home, "POST", f"{WORKBENCH}/agents/{agent.agent_id}/status", body)
    if reply is None or reply.status != 200:
        day.problem("agent", (agent.agent_id, status, reply))
        return
    agent.status = status
    day.record("status", "", agent.agent_id, sent, target=status)


async def log_in(day: Day, agent: Agent) -> None:
    agent.reader = Reader(day, agent_events(agent.agent_id), prefer=agent.home, on_event=agent_heard(agent))
    agent.reader.start()
    await agent.reader.opened()
    await set_status(day, agent, "online")


def agent_heard(agent: Agent) -> Callable[[SSEEvent], None]:
    def heard(event: SSEEvent) -> None:
        if event.type == "offer":
            agent.offers.put_nowait(event)

    return heard


async def brain(day: Day, agent: Agent) -> None:
    """Answer offers until the day ends or the agent is gone."""
    while not day.stopping and agent.gone_at is None:
        try:
            offer = await asyncio.wait_for(agent.offers.get(), 0.5)
        except TimeoutError:
            continue
        name = offer.payload["session_name"]
        if offer.payload["expires_at"] <= time.time():
            agent.choices["stale"] += 1  # a replayed offer, long gone
            continue
        choice = "accept" if day.closing else agent.rng.choices(list(ON_OFFER), list(ON_OFFER.values()))[0]
        agent.choices[choice] += 1
        if choice == "ignore":
            continue
        await asyncio.sleep(agent.rng.uniform(0.05, 0.3))
        path = f"{WORKBENCH}/sessions/{name}/{choice}"
        reply, sent = await day.request(agent.home, "POST", path, {"agent_id": agent.agent_id})
        if reply is None:
            continue
        if reply.status == 200:
            day.record(choice, name, agent.agent_id, sent)
            if choice == "accept" and name not in agent.holds:
                agent.holds[name] = asyncio.create_task(hold(day, agent, name))
        elif reply.status == 409:
            agent.refused[f"{choice} {reply.body['error']['code']}"] += 1
        else:
            day.problem("agent", (agent.agent_id, choice, name, reply.status, reply.body))


async def hold(day: Day, agent: Agent, name: str) -> None:
    """A conversation held: a message or two, then how it ends."""
    rng = agent.rng
    try:
        for n in range(rng.randint(1, 2)):
            await asyncio.sleep(rng.uniform(0.4, 1.4))
            if agent.gone_at is not None or day.stopping:
                return
            body = {"agent_id": agent.agent_id, "content": f"{agent.agent_id} here, about {name} ({n})"}
            reply, sent = await day.request(agent.home, "POST", f"{WORKBENCH}/sessions/{name}/messages", body)
            if reply is not None and reply.status == 200:
                day.record("message", name, agent.agent_id, sent, message_id=reply.body["message"]["id"])
            elif reply is not None and reply.status == 409:
                agent.refused["message"] += 1
                return  # the conversation moved on (closed as idle, back in the queue)
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        if agent.gone_at is not None or day.stopping:
            return
        ending = "close" if day.closing else rng.choices(list(ENDINGS), list(ENDINGS.values()))[0]
        agent.choices[ending] += 1
        if ending == "keep":
            return
        await end(day, agent, name, ending)
    finally:
        agent.holds.pop(name, None)


async def end(day: Day, agent: Agent, name: str, ending: str) -> None:
    body: dict[str, Any] = {"agent_id": agent.agent_id}
    target = None
    if ending == "to_queue":
        action, body = "transfer", {**body, "to_queue": True, "note": "needs billing"}
    elif ending == "to_agent":
        others = [a for a in day.online() if a != agent.agent_id]
        if not others:
            ending, action = "close", "close"
        else:
            target = agent.rng.choice(others)
            action, body = "transfer", {**body, "to_agent_id": target, "note": f"over to {target}"}
    else:
        action = ending
    path = f"{WORKBENCH}/sessions/{name}/{action}"
    day.tried.add((ending, name, agent.agent_id))
    reply, sent = await day.request(agent.home, "POST", path, body)
    if reply is None:
        return
    if reply.status == 200:
        day.record(ending, name, agent.agent_id, sent, target=target)
    elif reply.status == 409:
        agent.refused[ending] += 1
        code = reply.body["error"]["code"]
        if ending == "to_agent" and code in ("agent_unavailable", "at_capacity"):
            await end(day, agent, name, "close")
    else:
        day.problem("agent", (agent.agent_id, ending, name, reply.status, reply.body))


async def agent_day(day: Day, agent: Agent) -> None:
    await day.at(AGENTS_ONLINE)
    await log_in(day, agent)
    thinking = asyncio.create_task(brain(day, agent))
    try:
        if agent.lunch:
            await day.at(LUNCH[0] + agent.rng.uniform(0, 1))
            await set_status(day, agent, "away")
            await day.at(LUNCH[1] + agent.rng.uniform(0, 1))
            await set_status(day, agent, "online")
        if agent.fate != "stays":
            await day.at(SIGN_OFF + agent.rng.uniform(0, 1))
            agent.gone_at = time.time()
            for task in list(agent.holds.values()):
                task.cancel()
            if agent.fate == "signs_off":
                await set_status(day, agent, "offline")
            assert agent.reader is not None
            await agent.reader.stop()  # signed off, or the browser tab simply gone
            agent.status = "offline"
        await thinking
    finally:
        thinking.cancel()
        with suppress(asyncio.CancelledError):
            await thinking


# --- the invariants, sampled ---------------------------------------------------------------


async def every_page(day: Day, index: int, status: str) -> list[dict[str, Any]] | None:
    sessions: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(20):
        query = f"status={status}&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        reply, _ = await day.request(index, "GET", f"{WORKBENCH}/sessions?{query}")
        if reply is None or reply.status != 200:
            return None
        sessions.extend(reply.body["sessions"])
        if (cursor := reply.body["next_cursor"]) is None:
            return sessions
    return None


async def load(day: Day, index: int) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]] | None:
    """The registry's agents, and the conversations the sessions say each holds or is offered
    (held read first: a conversation accepted between the two reads is in neither; one sent
    back to the queue and offered to its agent again between them is in both, counted once)."""
    reply, _ = await day.request(index, "GET", f"{WORKBENCH}/agents")
    held = await every_page(day, index, "agent_active")
    queue = await every_page(day, index, "waiting_agent")
    if reply is None or reply.status != 200 or held is None or queue is None:
        return None
    counted: dict[str, set[str]] = defaultdict(set)
    for s in held:
        counted[s["agent_id"]].add(s["session_name"])
    for s in queue:
        if s.get("offer"):
            counted[s["offer"]["agent_id"]].add(s["session_name"])
    return {a["agent_id"]: a for a in reply.body["agents"]}, counted


def over(seen: tuple[dict[str, dict[str, Any]], dict[str, set[str]]]) -> dict[str, set[str]]:
    registry, counted = seen
    return {a: names for a, names in counted.items() if len(names) > registry[a]["capacity"]}


async def sample(day: Day) -> None:
    """Every SAMPLE_EVERY until the day ends: no agent counted past its capacity by the
    registry, nor holding plus offered more than it (confirmed by a second look, since two
    listings are not one moment); with what the registry counts, read on Redis, to tell a
    count lost from one never taken."""
    for n in range(MAX_SAMPLES):
        if day.stopping:
            return
        seen = await load(day, n)
        if seen is not None:
            day.samples += 1
            for agent in seen[0].values():
                if agent["active"] > agent["capacity"]:
                    day.problem("over capacity (registry)", agent)
            if over(seen) and (again := await load(day, n + 1)) is not None:
                for agent_id, names in over(again).items():
                    members = await day.redis.zrange(f"{AGENT_LOAD}{agent_id}", 0, -1)
                    registered = {as_text(m) for m in members if isinstance(m, bytes | str)}
                    day.problem(
                        "over capacity (sessions)", (agent_id, sorted(names), "counted", sorted(registered))
                    )
        await asyncio.sleep(SAMPLE_EVERY)


# --- the kill ------------------------------------------------------------------------------


async def kill_and_restart(day: Day) -> None:
    doomed = day.servers[1]
    await day.at(KILL_AT)
    day.killed_metrics = await scrape(day.http, doomed.url)
    await asyncio.to_thread(doomed.kill)  # clients find out by themselves, as browsers do
    day.down.add(1)  # (for a while: requests and reconnections still try it first)
    day.log.append(f"killed pid at {day.clock():.1f}")
    await day.at(RESTART_AT)
    await asyncio.to_thread(doomed.start)
    day.down.discard(1)
    day.log.append(f"restarted at {day.clock():.1f}")


# --- the end -------------------------------------------------------------------------------


async def sessions_now(day: Day) -> dict[str, dict[str, Any]]:
    async def one(c: Customer) -> tuple[str, dict[str, Any]]:
        reply, _ = await day.request(c.index, "GET", f"{WORKBENCH}/sessions/{c.name}")
        assert reply is not None and reply.status == 200, (c.name, reply)
        return c.name, reply.body

    return dict(await bounded_gather([partial(one, c) for c in day.customers]))


async def bounded_gather(makers: list[Callable[[], Awaitable[T]]], timeout: float = 60.0) -> list[T]:
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def gated(make: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await make()

    async with asyncio.timeout(timeout):
        return list(await asyncio.gather(*(gated(make) for make in makers)))


def settled(day: Day, sessions: dict[str, dict[str, Any]]) -> bool:
    """Nothing waits, the leavers' conversations are closed, the agents who left hold nothing."""
    leavers = {c.name for c in day.customers if c.leaves}
    gone = {a.agent_id for a in day.agents.values() if a.gone_at is not None}
    return all(
        s["status"] != "waiting_agent"
        and (name not in leavers or s["status"] == "closed")
        and not (s["status"] == "agent_active" and s["agent_id"] in gone)
        for name, s in sessions.items()
    )


async def replay(day: Day, path: str, since: str, limit: int = 5000) -> list[SSEEvent]:
    """Every event after ``since`` on a stream (its channel's history), read until quiet."""
    stream, connected = await connect(
        day.http, f"{day.servers[0].url}{path}", headers={"Last-Event-ID": since}, timeout=10.0
    )
    try:
        assert connected.payload.get("recovered") is True, (path, since, connected.data)
        return await stream.drain(REPLAY_QUIET, limit=limit, timeout=30.0)
    finally:
        stream.response.close()


# --- the checks ----------------------------------------------------------------------------


@dataclass
class Held:
    agent: str
    session: str
    start: str  # event id
    end: str | None


def holdings(day: Day, histories: dict[str, list[SSEEvent]]) -> list[Held]:
    """Who held each conversation, from its history: walked event by event, it never shows
    two holders at once, nor a status change that does not start where the last one ended."""
    spans: list[Held] = []
    for name, events in histories.items():
        status, holder, joined, span = "bot_active", None, None, None
        for e in events:
            p = e.payload
            if e.type == "agent_joined":
                if holder is not None or joined is not None:
                    day.problem("two holders", (name, e.id, "joined", p["agent_id"], "while", holder, joined))
                joined = p["agent_id"]
            elif e.type == "agent_left":
                if p["agent_id"] != holder:
                    day.problem("two holders", (name, e.id, "left", p["agent_id"], "holder", holder))
            elif e.type == "status_change":
                if p["previous_status"] != status:
                    day.problem("history chain", (name, e.id, p, "after", status))
                if span is not None:
                    span.end = e.id
                    span = None
                status, holder = p["status"], p["agent_id"]
                if status == "agent_active":
                    if p["previous_status"] == "agent_active" or joined != holder:
                        day.problem("two holders", (name, e.id, p, "joined", joined))
                    assert e.id is not None
                    span = Held(holder, name, e.id, None)
                    spans.append(span)
                elif holder is not None:
                    day.problem("history chain", (name, e.id, "a holder outside agent_active", p))
                joined = None
    return spans


def check_capacity(day: Day, spans: list[Held]) -> int:
    """Walked in event order (one clock for every channel), no agent ever held more than its
    capacity; the most any agent held at once."""
    moves: list[tuple[tuple[int, int], int, str]] = []
    for s in spans:
        moves.append((id_key(s.start), 1, s.agent))
        if s.end is not None:
            moves.append((id_key(s.end), -1, s.agent))
    held: Counter[str] = Counter()
    most = 0
    for key, step, agent_id in sorted(moves):
        held[agent_id] += step
        most = max(most, held[agent_id])
        agent = day.agents.get(agent_id)
        if agent is None or held[agent_id] > agent.capacity:
            day.problem("over capacity (history)", (agent_id, key, held[agent_id]))
    return most


def within(event: SSEEvent, done: Done) -> bool:
    assert event.id is not None
    return done.sent - MARGIN <= id_time(event.id) <= done.answered + MARGIN


def find(events: Iterable[SSEEvent], done: Done, type_: str, **payload: Any) -> SSEEvent | None:
    for e in events:
        if e.type == type_ and within(e, done) and all(e.payload.get(k) == v for k, v in payload.items()):
            return e
    return None


def check_answered(
    day: Day,
    histories: dict[str, list[SSEEvent]],
    transcripts: dict[str, list[dict[str, Any]]],
    spans: list[Held],
) -> None:
    """Every action answered 200 published what it should have: it is in the session's
    history (and a message in its transcript); an agent's message inside its holding."""
    by_message = {
        (name, e.payload["message"]["id"]): e
        for name, events in histories.items()
        for e in events
        if e.type == "new_message"
    }
    holding: dict[tuple[str, str], list[Held]] = defaultdict(list)
    for s in spans:
        holding[(s.session, s.agent)].append(s)
    for d in day.done:
        if d.kind in ("status", "decline"):
            continue  # on the broadcast only, or nothing at all
        events = histories[d.session]
        wanted: list[tuple[str, dict[str, Any]]] = []
        if d.kind == "escalate":
            wanted = [("status_change", {"previous_status": "bot_active", "status": "waiting_agent"})]
        elif d.kind == "accept":
            wanted = [
                ("agent_joined", {"agent_id": d.agent}),
                ("status_change", {"status": "agent_active", "agent_id": d.agent}),
            ]
        elif d.kind == "close":
            wanted = [("status_change", {"previous_status": "agent_active", "status": "closed"})]
        elif d.kind == "release":
            wanted = [
                ("agent_left", {"agent_id": d.agent}),
                ("status_change", {"previous_status": "agent_active", "status": "bot_active"}),
            ]
        elif d.kind in ("to_queue", "to_agent"):
            wanted = [
                ("agent_left", {"agent_id": d.agent}),
                ("status_change", {"previous_status": "agent_active", "status": "waiting_agent"}),
            ]
        for type_, payload in wanted:
            if find(events, d, type_, **payload) is None:
                day.problem("lost: answered 200, not in the history", (d, type_, payload))
        if d.kind in ("to_queue", "to_agent") and not any(
            e.type == "new_message" and e.payload["message"]["content"] == TRANSFER_NOTICE and within(e, d)
            for e in events
        ):
            day.problem("lost: answered 200, not in the history", (d, "transfer notice"))
        if d.message_id is not None:
            event = by_message.get((d.session, d.message_id))
            if event is None:
                day.problem("lost: answered 200, not in the history", (d, "new_message"))
            if d.message_id not in {m["id"] for m in transcripts[d.session]}:
                day.problem("lost: answered 200, not in the transcript", d)
            if d.kind == "message" and event is not None:
                assert event.id is not None and d.agent is not None
                inside = any(
                    id_key(s.start) < id_key(event.id) and (s.end is None or id_key(event.id) < id_key(s.end))
                    for s in holding[(d.session, d.agent)]
                )
                if not inside:
                    day.problem("an agent spoke without holding", (d, event.id))


def check_stream(day: Day, who: str, reader: Reader, replayed: list[SSEEvent], *, whole: bool) -> None:
    """What a client read, over all its connections, is its channels' history from where it
    started: the same ids in the same order, no gap across a reconnection (``whole``: up to
    the history's end; else up to the last event it read, for a client that left)."""
    got = [e.id for e in reader.events]
    if len(set(got)) != len(got) or got != sorted(got, key=lambda i: id_key(str(i))):
        day.problem("stream order", (who, got))
    last = reader.last_id
    want = [e.id for e in replayed if whole or (last is not None and id_key(str(e.id)) <= id_key(last))]
    if got != want:
        missing = [i for i in want if i not in set(got)]
        extra = [i for i in got if i not in set(want)]
        day.problem(
            "lost: a stream missed events",
            (
                who,
                "missing",
                missing[:5],
                len(missing),
                "extra",
                extra[:5],
                "connections",
                connections(reader),
            ),
        )
    for index, sent, connected in reader.connected[1:]:
        if connected.payload.get("recovered") is not True or connected.id != sent:
            day.problem("lost: a stream resumed unrecovered", (who, index, sent, connected.data))


def connections(reader: Reader) -> list[tuple[int, str | None]]:
    return [(index, sent) for index, sent, _ in reader.connected]


def check_offers_reached(day: Day, offers: dict[str, list[SSEEvent]]) -> None:
    """A transfer to an agent answered 200 is an offer on that agent's stream."""
    for d in day.done:
        if d.kind != "to_agent" or d.target is None:
            continue
        target = day.agents[d.target]
        if target.gone_at is not None and target.gone_at < d.answered + 0.5:
            continue
        if find(offers[d.target], d, "offer", session_name=d.session) is None:
            day.problem("lost: a transfer's offer did not reach its agent", d)


def check_customer_messages(day: Day, histories: dict[str, list[SSEEvent]], spans: list[Held]) -> None:
    """A customer's message (answered 200) while an agent held the conversation reached that
    agent's stream (unless the agent had left)."""
    heard = {
        (a.agent_id, e.payload["message"]["id"])
        for a in day.agents.values()
        if a.reader is not None
        for e in a.reader.events
        if e.type == "new_message"
    }
    by_session: dict[str, list[Held]] = defaultdict(list)
    for s in spans:
        by_session[s.session].append(s)
    for d in day.done:
        if d.kind != "chat":
            continue
        event = next(
            (
                e
                for e in histories[d.session]
                if e.type == "new_message" and e.payload["message"]["id"] == d.message_id
            ),
            None,
        )
        if event is None or event.id is None:
            continue  # reported by check_answered
        key = id_key(event.id)
        for s in by_session[d.session]:
            if id_key(s.start) < key and (s.end is None or key < id_key(s.end)):
                agent = day.agents[s.agent]
                if agent.gone_at is not None and agent.gone_at < id_time(event.id) + 0.5:
                    continue
                if (s.agent, d.message_id) not in heard:
                    day.problem("lost: a customer's message missed its agent", (d, s))


def check_presence(day: Day, replays: dict[str, list[SSEEvent]], histories: dict[str, list[SSEEvent]]) -> int:
    """Only the agents who dropped their streams were set offline by the system (those whose
    streams were on the killed process reconnected within --agent-grace), each once; only what
    the agents who left held went back to the queue for it. The offers published, counted."""
    broadcast = {e.id: e for events in replays.values() for e in events if e.type == "agent_status"}
    set_offline = Counter(
        e.payload["agent_id"]
        for e in broadcast.values()
        if e.data["source"] == "system" and e.payload["status"] == "offline"
    )
    dropped = Counter(a.agent_id for a in day.agents.values() if a.fate == "drops")
    if set_offline != dropped:
        day.problem("presence", ("set offline by the system", dict(set_offline), "dropped", dict(dropped)))
    for name, events in histories.items():
        left = None
        for e in events:
            if e.type == "agent_left":
                left = e.payload["agent_id"]
            elif (
                e.type == "status_change"
                and e.data["source"] == "system"
                and e.payload["status"] == "waiting_agent"
            ) and (left is None or day.agents[left].fate == "stays"):
                day.problem("presence", (name, e.id, "back to the queue from", left))
    return sum(e.type == "offer" for events in replays.values() for e in events)


def check_one_offer_at_a_time(
    day: Day, replays: dict[str, list[SSEEvent]], histories: dict[str, list[SSEEvent]]
) -> int:
    """A conversation is offered to one agent at a time: each offer of it (on the agents'
    channels) comes after the one before ended, by expiring, a decline asked for, the
    conversation moving (accepted, sent back, timed out) or its agent leaving. How many
    offers were checked."""
    offers: dict[str, dict[str, tuple[float, str, float]]] = defaultdict(dict)
    for agent_id, events in replays.items():
        for e in events:
            if e.type == "offer" and e.id is not None:
                offers[e.payload["session_name"]][e.id] = (id_time(e.id), agent_id, e.payload["expires_at"])
    declined = defaultdict(list)
    for d in day.done:
        if d.kind == "decline":
            declined[(d.session, d.agent)].append(d.sent)
    checked = 0
    for name, made in offers.items():
        moves = [id_time(str(e.id)) for e in histories[name] if e.type == "status_change"]
        ordered = sorted(made.values())
        for (t1, a1, expires), (t2, a2, _) in itertools.pairwise(ordered):
            checked += 1
            gone = day.agents[a1].gone_at
            ended = (
                t2 >= expires - 0.1
                or any(t1 - 0.05 <= t <= t2 + 0.05 for t in moves)
                or any(t1 - 0.05 <= t <= t2 + 0.05 for t in declined[(name, a1)])
                or (gone is not None and gone <= t2 + 0.05)
            )
            if not ended:
                day.problem("offered twice at once", (name, (t1, a1, expires), (t2, a2)))
    return checked


@dataclass
class Places:
    """What the customers saw of their place in the queue."""

    checked: int = 0
    saw_fall: int = 0
    must_fall: int = 0
    rises_explained: int = 0
    longest: int = 0


def check_places(day: Day, histories: dict[str, list[SSEEvent]], capacity: int) -> Places:
    """Each wait of each staying customer (split where its conversation entered the queue
    again): its positions never rose but for conversations put back at the front of the queue
    meanwhile; a customer placed further back than every agent's capacity together saw its
    position fall before it was taken; and its last position before being taken was within
    that capacity."""
    fronts = sorted(
        id_time(str(e.id))
        for events in histories.values()
        for e in events
        if e.type == "status_change" and e.payload["previous_status"] == "agent_active"
        and e.payload["status"] == "waiting_agent"
    )  # fmt: skip
    places = Places()
    for c in day.customers:
        if c.leaves or c.reader is None:
            continue
        events = histories[c.name]
        enters = [
            id_time(str(e.id))
            for e in events
            if e.type == "status_change" and e.payload["status"] == "waiting_agent"
        ]
        own_fronts = [
            id_time(str(e.id))
            for e in events
            if e.type == "status_change"
            and (e.payload["previous_status"], e.payload["status"]) == ("agent_active", "waiting_agent")
        ]
        exits = [
            (id_time(str(e.id)), e.payload["status"])
            for e in events
            if e.type == "status_change" and e.payload["previous_status"] == "waiting_agent"
        ]
        waits: list[list[tuple[float, int]]] = [[] for _ in enters]
        for t, position in c.reader.updates:
            k = bisect.bisect_right(enters, t + 0.05) - 1
            if k >= 0 and position is not None:
                waits[k].append((t, position))
        for k, seen in enumerate(waits):
            if not seen:
                continue
            places.checked += 1
            places.longest = max(places.longest, max(p for _, p in seen))
            for (t1, p1), (t2, p2) in itertools.pairwise(seen):
                if p2 > p1:
                    ahead = bisect.bisect_right(fronts, t2) - bisect.bisect_left(fronts, t1 - 2.0)
                    ahead -= sum(1 for t in own_fronts if t1 - 2.0 <= t <= t2)  # not ahead of itself
                    if p2 - p1 > ahead:
                        day.problem("a position rose", (c.name, k, seen))
                    else:
                        places.rises_explained += 1
            fell = any(p2 < p1 for (_, p1), (_, p2) in itertools.pairwise(seen))
            places.saw_fall += fell
            ended = exits[k][1] if k < len(exits) else None
            if seen[0][1] > capacity and ended is not None:
                places.must_fall += 1
                if not fell:
                    day.problem("a position never fell", (c.name, k, seen, ended))
            if ended == "agent_active" and seen[-1][1] > capacity:
                day.problem("taken from far back", (c.name, k, seen))
    return places


def check_ends(
    day: Day,
    sessions: dict[str, dict[str, Any]],
    histories: dict[str, list[SSEEvent]],
    transcripts: dict[str, list[dict[str, Any]]],
) -> Counter[str]:
    """Every conversation ended held (by an agent still there), back with the bot (released
    by an agent, or its wait timed out, with the notice), or closed (by an agent, or as idle
    with its reason, a customer who left). An agent's release or close counts when it was
    asked for, answered or not (an answer lost with the killed process)."""
    closes = {name for kind, name, _ in day.tried if kind == "close"}
    releases = {name for kind, name, _ in day.tried if kind == "release"}
    ends: Counter[str] = Counter()
    for c in day.customers:
        s = sessions[c.name]
        last = next((e for e in reversed(histories[c.name]) if e.type == "status_change"), None)
        said = [m["content"] for m in transcripts[c.name] if m["role"] == "bot"]
        if last is None or last.payload["status"] != s["status"]:
            day.problem("end", (c.name, "the history ends elsewhere", s["status"], last))
            continue
        if s["status"] == "agent_active":
            agent = day.agents.get(s["agent_id"])
            ok = agent is not None and agent.gone_at is None
            ends["held"] += 1
        elif s["status"] == "bot_active":
            timed_out = last.payload["previous_status"] == "waiting_agent"
            if timed_out:
                ok = s["escalation_reason"] == "wait_timeout" and WAIT_TIMEOUT_NOTICE in said
                ends["back with the bot: wait timeout"] += 1
            else:
                ok = c.name in releases
                ends["back with the bot: released"] += 1
        elif s["status"] == "closed":
            if s.get("closed_reason") == "customer_idle":
                ok = c.leaves
                ends["closed: customer idle"] += 1
            else:
                ok = c.name in closes and last.payload["previous_status"] == "agent_active"
                ends["closed: by an agent"] += 1
        else:
            ok = False
            ends[s["status"]] += 1
        if not ok:
            day.problem("end", (c.name, s, last.data, said[-2:]))
        requeued = sum(
            e.type == "status_change" and e.data["source"] == "system"
            and (e.payload["previous_status"], e.payload["status"]) == ("agent_active", "waiting_agent")
            for e in histories[c.name]
        )  # fmt: skip
        if requeued != said.count(AGENT_OFFLINE_NOTICE):
            day.problem("end", (c.name, "requeued", requeued, "notices", said.count(AGENT_OFFLINE_NOTICE)))
        ends["requeued: agent offline"] += requeued
        if c.leaves and s["status"] != "closed":
            day.problem("end", (c.name, "a customer who left, not closed as idle", s["status"]))
    return ends


def metrics_of(samples: list[Samples]) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    for name, label in (
        ("switchboard_offers_total", "result"),
        ("switchboard_requeued_total", "reason"),
        ("switchboard_transfers_total", "kind"),
        ("switchboard_routing_timeouts_total", "timer"),
    ):
        summed: Counter[str] = Counter()
        for s in samples:
            summed.update(by_label(s, name, label))
        totals[name] = dict(summed)
    return totals


# --- the test ------------------------------------------------------------------------------


async def test_a_scripted_day(redis_server: RedisServer, server_process: StartServer, tmp_path: Path) -> None:
    wall = time.monotonic()
    env = {**REDIS_ON, "REDIS_URL": redis_server.url}
    servers = [server_process(*FLAGS, env=env) for _ in range(2)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        redis = AsyncRedis(host="127.0.0.1", port=redis_server.port)
        day = Day(http, servers, random.Random(SEED), redis)
        cast(day)
        day.started = time.monotonic()
        actors = [asyncio.create_task(customer(day, c)) for c in day.customers]
        actors += [asyncio.create_task(agent_day(day, a)) for a in day.agents.values()]
        sampler = asyncio.create_task(sample(day))
        killer = asyncio.create_task(kill_and_restart(day))
        try:
            await day.at(CLOSING_TIME)
            day.closing = True
            day.log.append(f"closing time at {day.clock():.1f}")
            await asyncio.wait_for(killer, 30.0)
            sessions: dict[str, dict[str, Any]] = {}
            for _ in range(int(SETTLE_TIMEOUT / 0.5)):
                sessions = await sessions_now(day)
                if settled(day, sessions) and day.clock() > CLOSING_TIME:
                    break
                await asyncio.sleep(0.5)
            day.log.append(f"settled at {day.clock():.1f}")
            day.stopping = True
            async with asyncio.timeout(15.0):
                await asyncio.gather(sampler, *actors)
                holds = [t for a in day.agents.values() for t in a.holds.values()]
                await asyncio.gather(*holds, return_exceptions=True)
            await asyncio.sleep(1.5)  # the last events reach the streams
            # What there is at the end, every stream still open (an agent without one would go
            # offline, and its conversations back to the queue).
            names = [c.name for c in day.customers]
            histories = dict(
                zip(
                    names,
                    await bounded_gather(
                        [partial(replay, day, session_events(n, "workbench"), "0-0", 500) for n in names]
                    ),
                    strict=True,
                )
            )
            transcripts = dict(
                zip(
                    names,
                    await bounded_gather([partial(transcript, http, n, base=servers[0].url) for n in names]),
                    strict=True,
                )
            )
            starts = {
                a.agent_id: a.reader.first_position for a in day.agents.values() if a.reader is not None
            }
            assert all(starts.values()) and len(starts) == AGENT_COUNT, starts
            agent_replays = dict(
                zip(
                    starts,
                    await bounded_gather(
                        [partial(replay, day, agent_events(a), str(s)) for a, s in starts.items()]
                    ),
                    strict=True,
                )
            )
            sessions = await sessions_now(day)  # after the histories: none may have moved since
            metrics = metrics_of([day.killed_metrics, *[await scrape(http, s.url) for s in servers]])
            day.log.append(f"read back at {day.clock():.1f}")
        finally:
            day.stopping = True
            for task in [sampler, killer, *actors]:
                task.cancel()
            readers = [c.reader for c in day.customers] + [a.reader for a in day.agents.values()]
            await asyncio.gather(*(r.stop() for r in readers if r is not None), return_exceptions=True)
            await redis.aclose()

    # The checks.
    capacity = sum(a.capacity for a in day.agents.values())
    spans = holdings(day, histories)
    most_held = check_capacity(day, spans)
    check_answered(day, histories, transcripts, spans)
    for c in day.customers:
        if c.reader is not None:
            check_stream(day, c.name, c.reader, histories[c.name], whole=not c.leaves)
        else:
            day.problem("customer", (c.name, "never started"))
    for a in day.agents.values():
        assert a.reader is not None
        mine = [e for e in agent_replays[a.agent_id] if e.type not in AMBIENT]
        check_stream(day, a.agent_id, a.reader, mine, whole=False)
    check_offers_reached(day, {a: [e for e in r if e.type == "offer"] for a, r in agent_replays.items()})
    check_customer_messages(day, histories, spans)
    places = check_places(day, histories, capacity)
    ends = check_ends(day, sessions, histories, transcripts)
    offers_published = check_presence(day, agent_replays, histories)
    offers_checked = check_one_offer_at_a_time(day, agent_replays, histories)

    # What the day did.
    choices: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for a in day.agents.values():
        choices.update(a.choices)
        refused.update(a.refused)
    reconnected = {
        "customers": sum(len(c.reader.connected) > 1 for c in day.customers if c.reader is not None),
        "agents": sum(len(a.reader.connected) > 1 for a in day.agents.values() if a.reader is not None),
    }
    report = {
        "seconds": round(time.monotonic() - wall, 1),
        "timeline": day.log,
        "answered_200": dict(Counter(d.kind for d in day.done)),
        "agent_choices": dict(choices),
        "agent_409s": dict(refused),
        "retried_requests": day.retried,
        "samples": day.samples,
        "reconnected_streams": reconnected,
        "most_held_by_one_agent": most_held,
        "total_capacity": capacity,
        "ends": dict(ends),
        "places": vars(places),
        "metrics": metrics,
        "offers_published": offers_published,
        "offers_checked_one_at_a_time": offers_checked,
        "stream_failures": sum(len(r.failures) for r in readers if r is not None),
        "problems": {k: len(v) for k, v in day.problems.items()},
        "problem_samples": {k: v[:8] for k, v in day.problems.items()},
    }
    (tmp_path / "day-report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    for kind, seen in day.problems.items():
        print(f"--- {kind}: {len(seen)}")
        for line in seen[:5]:
            print("   ", line)

    # The day happened as scripted...
    assert day.samples >= 50, day.samples
    assert reconnected["agents"] >= 3 and reconnected["customers"] >= 20, reconnected
    offers = metrics["switchboard_offers_total"]
    assert choices["accept"] >= 150 and choices["decline"] >= 5 and choices["ignore"] >= 5, choices
    assert offers.get("expired", 0) >= 5 and offers.get("declined", 0) >= 5, offers
    # Each offer (the routers' and the transfers') on its agent's channel; the killed process's
    # counters are as scraped just before the kill.
    transfers = sum(d.kind == "to_agent" for d in day.done)
    assert offers_published >= offers.get("made", 0) + transfers, (offers_published, offers, transfers)
    assert metrics["switchboard_requeued_total"].get("agent_offline", 0) >= 1, metrics
    assert metrics["switchboard_routing_timeouts_total"].get("wait", 0) >= 1, metrics
    assert metrics["switchboard_transfers_total"].get("queue", 0) >= 1, metrics
    assert metrics["switchboard_transfers_total"].get("offer", 0) >= 1, metrics
    assert ends["closed: customer idle"] >= BOUNCERS, ends
    assert places.must_fall >= 5, places
    # ...and nothing went wrong.
    problems = {k: v[:3] for k, v in day.problems.items()}
    assert not problems, problems
