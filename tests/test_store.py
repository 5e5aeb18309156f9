"""The session store (docs/api.md, "Session state (Redis keys)"): the same contract on memory and on
a real redis-server, the Redis key layout, atomic transitions under contention, and outages."""

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from app.domain.store import (
    Action,
    MemorySessionStore,
    RedisSessionStore,
    Role,
    SessionExists,
    SessionNotFound,
    SessionStore,
    Status,
    StoreUnavailable,
    Transition,
    TransitionRefused,
    rules,
)
from app.domain.store.base import Bounds, OtherConversation
from app.domain.store.redis_indexes import StoreKeys
from tests.support.api import STATUSES
from tests.support.processes import free_port
from tests.support.store import CONCURRENCY, HOLDER, OTHER, assert_one_winner, index_of, status_sets_holding

session_key, messages_key = StoreKeys().session, StoreKeys().messages

ACTIONS: tuple[Action, ...] = ("escalate", "takeover", "release", "close")
ACTORS: tuple[str | None, ...] = (HOLDER, OTHER, None)
Case = tuple[Action, Status, str | None]  # (action, starting status, actor)
SESSION_KEYS = {"session_name", "status", "agent_id", "created_at", "updated_at", "escalation_reason"}
MESSAGE_KEYS = {"id", "role", "content", "agent_id", "created_at"}
OUTAGE_BOUND = 5.0  # docs/api.md: a store outage answers 503 within 5 s


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@dataclass
class Harness:
    """A store under test and, on Redis, a decode_responses client on the same server."""

    store: SessionStore
    redis: Redis | None


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The redis-server URL for the Redis backend, None for memory."""
    if backend == "redis":
        result: str | None = request.getfixturevalue("redis_url")
        return result
    return None


@pytest.fixture
async def harness(store_url: str | None) -> AsyncIterator[Harness]:
    """A MemorySessionStore, or a RedisSessionStore on its own client (closed at teardown)."""
    store: SessionStore
    if store_url is None:
        store = MemorySessionStore()
        yield Harness(store, None)
        await store.close()
        return
    client = Redis.from_url(store_url)
    inspector = Redis.from_url(store_url, decode_responses=True)
    store = RedisSessionStore(client)
    try:
        yield Harness(store, inspector)
    finally:
        await store.close()
        await client.aclose()
        await inspector.aclose()


@pytest.fixture
def store(harness: Harness) -> SessionStore:
    return harness.store


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisSessionStore]:
    """A RedisSessionStore on the suite's redis-server, with its own client."""
    client = Redis.from_url(redis_url)
    store = RedisSessionStore(client)
    try:
        yield store
    finally:
        await store.close()
        await client.aclose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``clock(t)`` pins the store's notion of "now" to unix second ``t``."""
    current = [0]
    monkeypatch.setattr(rules, "now", lambda: current[0])

    def set_time(t: int) -> None:
        current[0] = t

    return set_time


async def put_in(store: SessionStore, name: str, status: Status) -> None:
    """Create ``name`` and bring it to ``status`` (agent_active is held by HOLDER)."""
    await store.create(name)
    if status == "waiting_agent":
        await store.apply(name, "escalate", reason="setup")
    elif status == "agent_active":
        await store.apply(name, "takeover", HOLDER)
    elif status == "closed":
        await store.apply(name, "close")
    assert (await store.get(name))["status"] == status


async def assert_consistent(h: Harness, name: str) -> None:
    """On Redis: session:{name} is the stored session and exactly one status set holds it."""
    if h.redis is None:
        return
    stored = await h.store.get(name)
    raw = await h.redis.get(session_key(name))
    assert raw is not None
    assert json.loads(raw) == stored
    assert await status_sets_holding(h.redis, name) == [stored["status"]]


async def snapshot(h: Harness, name: str) -> Any:
    """Everything the store holds about ``name``: session, transcript and, on Redis, every key."""
    state: dict[str | bytes, Any] = {
        "session": await h.store.get(name),
        "messages": (await h.store.messages(name)).items,
    }
    if h.redis is not None:
        for key in sorted(await h.redis.keys("*")):
            kind = await h.redis.type(key)
            if kind == "string":
                state[key] = await h.redis.get(key)
            elif kind == "zset":
                state[key] = await h.redis.zrange(key, 0, -1, withscores=True)
            elif kind == "list":
                state[key] = await h.redis.lrange(key, 0, -1)
            else:
                state[key] = kind
    return state


def assert_session_shape(session: Any, name: str) -> None:
    """``session`` has the docs/api.md keys with the right types (integer unix seconds)."""
    assert set(session) >= SESSION_KEYS
    assert session["session_name"] == name
    assert session["status"] in STATUSES
    assert session["agent_id"] is None or isinstance(session["agent_id"], str)
    assert session["escalation_reason"] is None or isinstance(session["escalation_reason"], str)
    for key in ("created_at", "updated_at"):
        assert type(session[key]) is int, key
        assert abs(session[key] - time.time()) < 60, key
    assert session["updated_at"] >= session["created_at"]


# --------------------------------------------------------------------------------------------
# Create, get, get_or_create


async def test_create_returns_a_new_bot_active_session(store: SessionStore) -> None:
    """create() makes a bot_active session with no holder, no reason and integer times."""
    session = await store.create("s1")
    assert_session_shape(session, "s1")
    assert session["status"] == "bot_active"
    assert session["agent_id"] is None
    assert session["escalation_reason"] is None
    assert session["created_at"] == session["updated_at"]
    assert await store.get("s1") == session
    assert (await store.messages("s1")).items == []


async def test_create_twice_raises_session_exists(harness: Harness) -> None:
    """A second create() of the same name raises SessionExists and changes nothing."""
    first = await harness.store.create("s1")
    before = await snapshot(harness, "s1")
    with pytest.raises(SessionExists) as caught:
        await harness.store.create("s1")
    assert caught.value.session_name == "s1"
    assert await snapshot(harness, "s1") == before
    assert await harness.store.get("s1") == first


async def test_get_unknown_raises_session_not_found(store: SessionStore) -> None:
    """get() of a name never created raises SessionNotFound."""
    with pytest.raises(SessionNotFound) as caught:
        await store.get("nobody")
    assert caught.value.session_name == "nobody"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.messages("nobody"), id="messages"),
        pytest.param(lambda s: s.add_message("nobody", "customer", "hi"), id="add_message"),
        *(pytest.param(lambda s, a=a: s.apply("nobody", a, HOLDER), id=a) for a in ACTIONS),
    ],
)
async def test_unknown_session_raises_session_not_found(
    harness: Harness, call: Callable[[SessionStore], Awaitable[object]]
) -> None:
    """Every per-session call on an unknown session raises SessionNotFound and creates nothing."""
    with pytest.raises(SessionNotFound):
        await call(harness.store)
    with pytest.raises(SessionNotFound):
        await harness.store.get("nobody")
    if harness.redis is not None:
        assert await harness.redis.keys("*") == []


async def test_get_or_create_creates_then_returns_existing(harness: Harness) -> None:
    """get_or_create() creates once (flag True), then returns the stored session (flag False)."""
    store = harness.store
    created, was_created = await store.get_or_create("s1")
    assert was_created is True
    assert_session_shape(created, "s1")
    assert created["status"] == "bot_active"
    await store.apply("s1", "escalate", reason="why")
    again, was_created = await store.get_or_create("s1")
    assert was_created is False
    assert again == await store.get("s1")
    assert again["status"] == "waiting_agent"
    await assert_consistent(harness, "s1")


async def test_create_after_get_or_create_raises(store: SessionStore) -> None:
    """A session made by get_or_create() exists for create()."""
    await store.get_or_create("s1")
    with pytest.raises(SessionExists):
        await store.create("s1")


# --------------------------------------------------------------------------------------------
# The transition table


def _allowed() -> dict[Case, tuple[Status, str | None]]:
    """(action, starting status, actor) -> (new status, new holder), per docs/api.md."""
    table: dict[Case, tuple[Status, str | None]] = {}
    for actor in ACTORS:
        table["escalate", "bot_active", actor] = ("waiting_agent", None)
        table["close", "bot_active", actor] = ("closed", None)
        table["close", "waiting_agent", actor] = ("closed", None)
    for agent in (HOLDER, OTHER):
        table["takeover", "bot_active", agent] = ("agent_active", agent)
        table["takeover", "waiting_agent", agent] = ("agent_active", agent)
    table["release", "agent_active", HOLDER] = ("bot_active", None)
    table["close", "agent_active", HOLDER] = ("closed", None)
    return table


ALLOWED = _allowed()
# 200, unchanged, no event.
IDEMPOTENT: set[Case] = {("escalate", "waiting_agent", actor) for actor in ACTORS} | {
    ("takeover", "agent_active", HOLDER)
}
# A takeover names the agent taking over; one without an agent is not part of the table.
UNDEFINED: set[Case] = {("takeover", status, None) for status in STATUSES}
REFUSED = sorted(
    (
        case
        for case in itertools.product(ACTIONS, STATUSES, ACTORS)
        if case not in ALLOWED and case not in IDEMPOTENT and case not in UNDEFINED
    ),
    key=str,
)


def case_id(case: Case) -> str:
    action, status, actor = case
    return f"{action}-from-{status}-by-{actor or 'nobody'}"


def test_transition_table_is_complete() -> None:
    """Every (action, status, actor) is exactly one of allowed, idempotent, refused, undefined."""
    groups = [set(ALLOWED), IDEMPOTENT, set(REFUSED), UNDEFINED]
    assert sum(len(g) for g in groups) == len(ACTIONS) * len(STATUSES) * len(ACTORS)
    assert set().union(*groups) == set(itertools.product(ACTIONS, STATUSES, ACTORS))


@pytest.mark.parametrize("case", sorted(ALLOWED, key=str), ids=case_id)
async def test_allowed_transition(harness: Harness, case: Case) -> None:
    """An allowed action moves the session to the new status and holder, changed=True."""
    action, start, actor = case
    new_status, new_holder = ALLOWED[case]
    await put_in(harness.store, "s1", start)
    before = await harness.store.get("s1")

    transition = await harness.store.apply("s1", action, actor)

    assert isinstance(transition, Transition)
    assert transition.changed is True
    assert transition.previous_status == start
    after = transition.session
    assert_session_shape(after, "s1")
    assert after["status"] == new_status
    assert after["agent_id"] == new_holder
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] >= before["updated_at"]
    assert await harness.store.get("s1") == after
    await assert_consistent(harness, "s1")


@pytest.mark.parametrize("case", sorted(IDEMPOTENT, key=str), ids=case_id)
async def test_idempotent_transition(harness: Harness, case: Case) -> None:
    """Escalating a waiting session, or a takeover by the holder: changed=False, nothing moves."""
    action, start, actor = case
    await put_in(harness.store, "s1", start)
    before = await snapshot(harness, "s1")

    transition = await harness.store.apply("s1", action, actor, reason="again")

    assert transition.changed is False
    assert transition.previous_status == start
    assert transition.session == before["session"]
    assert await snapshot(harness, "s1") == before


@pytest.mark.parametrize("case", REFUSED, ids=case_id)
async def test_refused_transition(harness: Harness, case: Case) -> None:
    """A forbidden action raises TransitionRefused and leaves every stored thing unchanged."""
    action, start, actor = case
    await put_in(harness.store, "s1", start)
    before = await snapshot(harness, "s1")

    with pytest.raises(TransitionRefused):
        await harness.store.apply("s1", action, actor, reason="nope")

    assert await snapshot(harness, "s1") == before
    await assert_consistent(harness, "s1")


async def test_escalation_reason_is_stored(store: SessionStore) -> None:
    """escalate(reason=...) stores the reason on the session; without one it is None."""
    await store.create("with")
    transition = await store.apply("with", "escalate", reason="wants a refund")
    assert transition.session["escalation_reason"] == "wants a refund"
    assert (await store.get("with"))["escalation_reason"] == "wants a refund"

    await store.create("without")
    await store.apply("without", "escalate")
    assert (await store.get("without"))["escalation_reason"] is None


@pytest.mark.parametrize("action", ["release", "close"])
async def test_no_holder_after_release_or_close(store: SessionStore, action: Action) -> None:
    """After the holder releases or closes, agent_id is None."""
    await put_in(store, "s1", "agent_active")
    transition = await store.apply("s1", action, HOLDER)
    assert transition.session["agent_id"] is None
    assert (await store.get("s1"))["agent_id"] is None


async def test_full_lifecycle_keeps_state_consistent(harness: Harness) -> None:
    """escalate, takeover, release, takeover by another, close: each step consistent."""
    store = harness.store
    await store.create("s1")
    steps: list[tuple[Action, str | None, Status, str | None]] = [
        ("escalate", None, "waiting_agent", None),
        ("takeover", HOLDER, "agent_active", HOLDER),
        ("release", HOLDER, "bot_active", None),
        ("takeover", OTHER, "agent_active", OTHER),
        ("close", OTHER, "closed", None),
    ]
    previous: Status = "bot_active"
    for action, actor, status, holder in steps:
        transition = await store.apply("s1", action, actor)
        assert (transition.previous_status, transition.session["status"]) == (previous, status)
        assert transition.session["agent_id"] == holder
        await assert_consistent(harness, "s1")
        previous = status


# --------------------------------------------------------------------------------------------
# Messages


def _speak_cases() -> Iterator[tuple[Role, Status, str | None, bool]]:
    """(role, status, agent_id, allowed) for every role in every status, per docs/api.md."""
    for status in STATUSES:
        yield "customer", status, None, status != "closed"
        yield "bot", status, None, status == "bot_active"
        for agent in ACTORS:
            yield "agent", status, agent, status == "agent_active" and agent == HOLDER


SPEAK_CASES = list(_speak_cases())


@pytest.mark.parametrize(
    ("role", "status", "agent_id", "allowed"),
    SPEAK_CASES,
    ids=[f"{r}-{s}-{a or 'nobody'}-{'ok' if ok else 'refused'}" for r, s, a, ok in SPEAK_CASES],
)
async def test_add_message_rules(
    harness: Harness, role: Role, status: Status, agent_id: str | None, allowed: bool
) -> None:
    """Customer anywhere but closed; bot only bot_active; agent only agent_active by the holder."""
    store = harness.store
    await put_in(store, "s1", status)
    before = await snapshot(harness, "s1")

    if not allowed:
        with pytest.raises(TransitionRefused):
            await store.add_message("s1", role, "hello there", agent_id)
        assert await snapshot(harness, "s1") == before
        return

    session, message = await store.add_message("s1", role, "hello there", agent_id)
    assert session == before["session"]  # the session as the message found it
    # Speaking never moves the session; the holder's first word ends the wait for an answer,
    # and a customer's is one more the agents have not read.
    after = {k: v for k, v in before["session"].items() if role != "agent" or k != "answer_due"}
    assert "answer_due" in before["session"] or role != "agent"
    if role == "customer":
        after["unread"] = before["session"].get("unread", 0) + 1
    assert await store.get("s1") == after
    assert (await store.messages("s1")).items == [message]
    await assert_consistent(harness, "s1")


@pytest.mark.parametrize(("role", "agent_id"), [("customer", None), ("bot", None), ("agent", HOLDER)])
async def test_message_shape(store: SessionStore, role: Role, agent_id: str | None) -> None:
    """A message has id, role, content, agent_id and integer created_at, as stored."""
    await put_in(store, "s1", "agent_active" if role == "agent" else "bot_active")
    _, message = await store.add_message("s1", role, "Ünïcødé 你好 ✓", agent_id)
    assert set(message) >= MESSAGE_KEYS
    assert isinstance(message["id"], str) and message["id"]
    assert message["role"] == role
    assert message["content"] == "Ünïcødé 你好 ✓"
    assert message["agent_id"] == agent_id
    assert type(message["created_at"]) is int
    assert abs(message["created_at"] - time.time()) < 60
    assert (await store.messages("s1")).items == [message]


async def test_transcript_oldest_first_with_unique_ids(store: SessionStore) -> None:
    """messages() returns the transcript in the order it was written, every id distinct."""
    await store.create("s1")
    written = []
    for i in range(6):
        role: Role = "customer" if i % 2 == 0 else "bot"
        written.append((await store.add_message("s1", role, f"m{i}"))[1])
    transcript = (await store.messages("s1")).items
    assert transcript == written
    assert [m["content"] for m in transcript] == [f"m{i}" for i in range(6)]
    assert len({m["id"] for m in transcript}) == 6


async def test_transcripts_are_per_session(store: SessionStore) -> None:
    """A message added to one session does not appear in another."""
    await store.create("a")
    await store.create("b")
    await store.add_message("a", "customer", "for a")
    assert [m["content"] for m in (await store.messages("a")).items] == ["for a"]
    assert (await store.messages("b")).items == []


TRANSCRIPT_LIMIT = Bounds().transcript_messages


async def test_transcript_capped_at_limit(harness: Harness) -> None:
    """After 510 messages the transcript holds the newest 500, oldest first."""
    assert TRANSCRIPT_LIMIT == 500
    store = harness.store
    await store.create("s1")
    for i in range(TRANSCRIPT_LIMIT + 10):
        await store.add_message("s1", "customer", f"m{i}")
    transcript = (await store.messages("s1", limit=1000)).items
    assert len(transcript) == TRANSCRIPT_LIMIT
    assert [m["content"] for m in transcript] == [f"m{i}" for i in range(10, TRANSCRIPT_LIMIT + 10)]
    if harness.redis is not None:
        assert await harness.redis.llen(messages_key("s1")) == TRANSCRIPT_LIMIT


# --------------------------------------------------------------------------------------------
# The queue: list_sessions


async def test_list_sessions_only_that_status(harness: Harness) -> None:
    """list_sessions(status) returns exactly the sessions in that status."""
    store = harness.store
    for i, status in enumerate(STATUSES * 2):
        await put_in(store, f"{status}-{i // len(STATUSES)}", status)
    for status in STATUSES:
        listed = (await store.list_sessions(status)).items
        assert {s["session_name"] for s in listed} == {f"{status}-0", f"{status}-1"}
        assert all(s["status"] == status for s in listed)
        for s in listed:
            assert s == await store.get(s["session_name"])


async def test_list_sessions_empty(store: SessionStore) -> None:
    """A status nobody is in lists as an empty list."""
    await store.create("s1")
    assert (await store.list_sessions("waiting_agent")).items == []


async def test_list_sessions_first_come_first_served(
    store: SessionStore, clock: Callable[[int], None]
) -> None:
    """The queue is in the order sessions entered the status, even within one second, and
    neither creation order nor names decide it."""
    clock(1_700_000_000)  # one second for everything: only the order of arrival can decide
    for name in ("early", "mid", "zeta", "alpha", "late", "idle"):
        await store.create(name)
    for name in ("late", "zeta", "early", "alpha", "mid"):
        await store.apply(name, "escalate")

    queue = [s["session_name"] for s in (await store.list_sessions("waiting_agent")).items]
    assert queue == ["late", "zeta", "early", "alpha", "mid"]
    assert [s["session_name"] for s in (await store.list_sessions("bot_active")).items] == ["idle"]

    # Back in bot_active after a release: it entered bot_active last, so it queues after "idle".
    await store.apply("zeta", "takeover", HOLDER)
    await store.apply("zeta", "release", HOLDER)
    assert [s["session_name"] for s in (await store.list_sessions("bot_active")).items] == ["idle", "zeta"]
    queue = [s["session_name"] for s in (await store.list_sessions("waiting_agent")).items]
    assert queue == ["late", "early", "alpha", "mid"]


async def test_status_seq_increases_on_every_change(store: SessionStore) -> None:
    """Each creation and each status change takes a larger status_seq; a no-op keeps it."""
    first = await store.create("s1")
    second = await store.create("s2")
    escalated = (await store.apply("s1", "escalate")).session
    unchanged = (await store.apply("s1", "escalate")).session
    assert first["status_seq"] < second["status_seq"] < escalated["status_seq"]
    assert unchanged["status_seq"] == escalated["status_seq"]


# --------------------------------------------------------------------------------------------
# Redis only: the key layout


async def stored_json(redis: Redis, key: str) -> Any:
    """The JSON string the server holds at ``key``, parsed."""
    raw = await redis.get(key)
    assert raw is not None, f"no {key}"
    return json.loads(raw)


async def assert_keys(redis: Redis, expected: dict[str, str]) -> None:
    """The server holds exactly the keys in ``expected`` (key -> Redis type)."""
    keys = await redis.keys("*")
    assert {k: await redis.type(k) for k in keys} == expected


async def test_redis_key_layout(redis_store: RedisSessionStore, redis: Redis) -> None:
    """Keys: session:{name} JSON session, status:{status} sorted sets of names, messages:{name}
    list and messages_size:{name} its bytes, and the one clock that orders the queue. Every
    one of them expires."""
    store = redis_store
    session = await store.create("s1")
    counter = {"sessions:status_seq": "string"}
    await assert_keys(redis, {session_key("s1"): "string", "status:bot_active": "zset", **counter})
    assert await stored_json(redis, session_key("s1")) == session
    assert await index_of(redis, "bot_active") == {"s1"}

    _, message = await store.add_message("s1", "customer", "hello")
    transcript = {messages_key("s1"): "list", "messages_size:{s1}": "string"}
    await assert_keys(
        redis, {session_key("s1"): "string", "status:bot_active": "zset", **transcript, **counter}
    )
    assert [json.loads(m) for m in await redis.lrange(messages_key("s1"), 0, -1)] == [message]

    steps: list[tuple[Action, str | None]] = [
        ("escalate", None),
        ("takeover", HOLDER),
        ("release", HOLDER),
        ("takeover", OTHER),
        ("close", OTHER),
    ]
    for action, actor in steps:
        transition = await store.apply("s1", action, actor)
        status = transition.session["status"]
        await assert_keys(
            redis, {session_key("s1"): "string", f"status:{status}": "zset", **transcript, **counter}
        )
        assert await stored_json(redis, session_key("s1")) == transition.session
        assert await index_of(redis, status) == {"s1"}
        assert await status_sets_holding(redis, "s1") == [status]
    for key in await redis.keys("*"):
        assert await redis.pttl(key) > 0, f"{key!r} does not expire"


async def test_redis_status_sets_hold_many_sessions(redis_store: RedisSessionStore, redis: Redis) -> None:
    """Each status set holds the names of all sessions in that status and nothing else."""
    for i, status in enumerate(STATUSES * 3):
        await put_in(redis_store, f"s{i}", status)
    for j, status in enumerate(STATUSES):
        assert await index_of(redis, status) == {f"s{j}", f"s{j + 4}", f"s{j + 8}"}


async def test_redis_store_reads_what_another_store_wrote(
    redis_store: RedisSessionStore, redis_url: str
) -> None:
    """Two stores on the same server (two processes) see one state."""
    client = Redis.from_url(redis_url)
    other = RedisSessionStore(client)
    try:
        await redis_store.create("s1")
        await other.apply("s1", "takeover", HOLDER)
        await other.add_message("s1", "agent", "hi", HOLDER)
        assert (await redis_store.get("s1"))["agent_id"] == HOLDER
        assert [m["content"] for m in (await redis_store.messages("s1")).items] == ["hi"]
        with pytest.raises(SessionExists):
            await other.create("s1")
    finally:
        await other.close()
        await client.aclose()


# --------------------------------------------------------------------------------------------
# Redis only: atomic transitions under contention


@pytest.mark.parametrize("start", ["bot_active", "waiting_agent"])
async def test_concurrent_takeovers_on_one_store(
    redis_store: RedisSessionStore, redis: Redis, start: Status
) -> None:
    """20 agents take over at once through one store: exactly one wins, 19 are refused."""
    for round_ in range(3):
        name = f"race{round_}"
        await put_in(redis_store, name, start)
        agents = [f"agent{i}" for i in range(CONCURRENCY)]
        async with asyncio.timeout(10):
            results = await asyncio.gather(
                *(redis_store.apply(name, "takeover", a) for a in agents), return_exceptions=True
            )
        winner = assert_one_winner(results, agents)
        stored = await redis_store.get(name)
        assert (stored["status"], stored["agent_id"]) == ("agent_active", winner)
        assert await status_sets_holding(redis, name) == ["agent_active"]


@pytest.mark.parametrize("start", ["bot_active", "waiting_agent"])
async def test_concurrent_takeovers_on_separate_stores(redis_url: str, redis: Redis, start: Status) -> None:
    """20 agents, each through its own store and client (20 processes): exactly one wins."""
    clients = [Redis.from_url(redis_url) for _ in range(CONCURRENCY)]
    stores = [RedisSessionStore(c) for c in clients]
    try:
        for round_ in range(3):
            name = f"race{round_}"
            await put_in(stores[0], name, start)
            # Open every connection first so the takeovers start together.
            await asyncio.gather(*(c.ping() for c in clients))
            agents = [f"agent{i}" for i in range(CONCURRENCY)]
            async with asyncio.timeout(10):
                results = await asyncio.gather(
                    *(s.apply(name, "takeover", a) for s, a in zip(stores, agents, strict=True)),
                    return_exceptions=True,
                )
            winner = assert_one_winner(results, agents)
            stored = await stores[-1].get(name)
            assert (stored["status"], stored["agent_id"]) == ("agent_active", winner)
            assert await status_sets_holding(redis, name) == ["agent_active"]
    finally:
        for s, c in zip(stores, clients, strict=True):
            await s.close()
            await c.aclose()


RACES: list[list[tuple[Action, str | None]]] = [
    [("escalate", None), ("takeover", HOLDER), ("close", HOLDER)],
    [("escalate", None), ("takeover", HOLDER), ("takeover", OTHER), ("close", None)],
    [("takeover", HOLDER), ("release", HOLDER), ("close", HOLDER), ("escalate", None)],
    [("escalate", None), ("escalate", None), ("takeover", OTHER), ("close", OTHER), ("release", OTHER)],
]


@pytest.mark.parametrize("race", RACES, ids=lambda r: "+".join(a for a, _ in r))
async def test_concurrent_mixed_actions_stay_consistent(
    redis_url: str, redis: Redis, race: list[tuple[Action, str | None]]
) -> None:
    """Racing escalate/takeover/release/close leaves session:{name} and one status set agreeing."""
    clients = [Redis.from_url(redis_url) for _ in race]
    stores = [RedisSessionStore(c) for c in clients]
    try:
        for round_ in range(15):
            name = f"mix{round_}"
            initial = await stores[0].create(name)
            await asyncio.gather(*(c.ping() for c in clients))
            async with asyncio.timeout(10):
                results = await asyncio.gather(
                    *(s.apply(name, a, actor) for s, (a, actor) in zip(stores, race, strict=True)),
                    return_exceptions=True,
                )
            unexpected = [r for r in results if not isinstance(r, (Transition, TransitionRefused))]
            assert unexpected == []
            committed = [r.session for r in results if isinstance(r, Transition) and r.changed]

            stored = await stores[0].get(name)
            assert await stored_json(redis, session_key(name)) == stored
            assert await status_sets_holding(redis, name) == [stored["status"]]
            # The stored session is the one the last committed transition wrote.
            assert stored in (committed or [initial])
            # Nothing leaves closed: a committed close is final.
            if any(s["status"] == "closed" for s in committed):
                assert stored["status"] == "closed"
            if stored["status"] == "agent_active":
                assert stored["agent_id"] in {actor for _, actor in race if actor}
            else:
                assert stored["agent_id"] is None
    finally:
        for s, c in zip(stores, clients, strict=True):
            await s.close()
            await c.aclose()


async def test_concurrent_get_or_create_creates_once(redis_url: str, redis: Redis) -> None:
    """Of 20 concurrent get_or_create() calls on separate stores, exactly one creates."""
    clients = [Redis.from_url(redis_url) for _ in range(CONCURRENCY)]
    stores = [RedisSessionStore(c) for c in clients]
    try:
        async with asyncio.timeout(10):
            results = await asyncio.gather(*(s.get_or_create("s1") for s in stores))
        assert sum(created for _, created in results) == 1
        assert len({json.dumps(s, sort_keys=True) for s, _ in results}) == 1
        assert await status_sets_holding(redis, "s1") == ["bot_active"]
    finally:
        for s, c in zip(stores, clients, strict=True):
            await s.close()
            await c.aclose()


# --------------------------------------------------------------------------------------------
# Redis only: an unreachable server


@pytest.fixture
async def dead_store() -> AsyncIterator[RedisSessionStore]:
    """A RedisSessionStore pointed at a loopback port nobody listens on."""
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    store = RedisSessionStore(client)
    try:
        yield store
    finally:
        await store.close()
        await client.aclose()


DEAD_CALLS: list[Any] = [
    pytest.param(lambda s: s.create("s1"), id="create"),
    pytest.param(lambda s: s.get("s1"), id="get"),
    pytest.param(lambda s: s.get_or_create("s1"), id="get_or_create"),
    *(pytest.param(lambda s, a=a: s.apply("s1", a, HOLDER), id=f"apply-{a}") for a in ACTIONS),
    pytest.param(lambda s: s.add_message("s1", "customer", "hi"), id="add_message"),
    pytest.param(lambda s: s.list_sessions("waiting_agent"), id="list_sessions"),
    pytest.param(lambda s: s.messages("s1"), id="messages"),
]


@pytest.mark.parametrize("call", DEAD_CALLS)
async def test_unreachable_redis_raises_store_unavailable(
    dead_store: RedisSessionStore, call: Callable[[SessionStore], Awaitable[object]]
) -> None:
    """Redis unreachable: every call raises StoreUnavailable, not a redis error, in bounded time."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        async with asyncio.timeout(OUTAGE_BOUND * 2):
            await call(dead_store)
    assert time.monotonic() - started < OUTAGE_BOUND
    assert type(caught.value) is StoreUnavailable


async def test_what_a_process_remembers_of_a_session_never_decides_a_refusal(redis_url: str) -> None:
    """Two stores (two processes): the first remembers the session as it wrote it; the second
    changes it. The first's next decisions follow Redis, not its memory: the holder speaks, a
    second agent is refused, and an action its memory calls a no-op is judged on the session
    as it is."""
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    mine, theirs = (RedisSessionStore(c) for c in clients)
    try:
        await mine.create("remembered")
        await mine.apply("remembered", "escalate")  # remembered as waiting_agent
        await theirs.apply("remembered", "takeover", HOLDER)
        with pytest.raises(TransitionRefused):  # not the no-op that waiting_agent would give
            await mine.apply("remembered", "escalate")
        await theirs.apply("remembered", "release", HOLDER)
        await theirs.apply("remembered", "takeover", HOLDER)
        _, message = await mine.add_message("remembered", "agent", "hello", HOLDER)
        assert message["agent_id"] == HOLDER
        with pytest.raises(TransitionRefused):
            await mine.apply("remembered", "takeover", OTHER)
    finally:
        for store, client in zip((mine, theirs), clients, strict=True):
            await store.close()
            await client.aclose()


async def test_a_token_of_another_conversation_changes_nothing(store: SessionStore) -> None:
    """The store checks the token's conversation (incarnation) as it acts: a message or an
    action carrying another one is refused and leaves the session and transcript as they were."""
    session = await store.create("reborn")
    other = "0" * 16 if session["incarnation"] != "0" * 16 else "1" * 16
    with pytest.raises(OtherConversation):
        await store.add_message("reborn", "customer", "hello", incarnation=other)
    with pytest.raises(OtherConversation):
        await store.apply("reborn", "escalate", incarnation=other)
    assert (await store.messages("reborn")).items == []
    assert (await store.get("reborn"))["status"] == "bot_active"
    _, message = await store.add_message("reborn", "customer", "hello", incarnation=session["incarnation"])
    assert [m["id"] for m in (await store.messages("reborn")).items] == [message["id"]]
