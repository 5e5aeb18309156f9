"""Authentication and authorization (issue 4): signed tokens on every endpoint of both sub-apps.

What these tests prove, on the real app (and real ``run.py`` processes) with nothing mocked:
every endpoint refuses a missing, malformed, forged, expired or wrongly-kinded token with a JSON
401 (and a ``WWW-Authenticate`` challenge) and the wrong subject with a JSON 403, without
changing state, publishing anything or opening a stream; the tokens handed out work where they
should and only there; the handoff runs end to end with tokens; the per-token limits trigger
and recover; a process without a secret refuses to start; ``run.py token`` mints tokens the app
accepts; unsafe names never reach Redis; and tokens never reach the logs.
"""

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from app.domain.auth import Principal, TokenAuthority
from app.factory import create_app
from app.process.settings import Settings
from tests.support import api
from tests.support.api import CHATBOT, WORKBENCH, Reply, bearer, call, exchange
from tests.support.app_server import AppClient, MakeClient
from tests.support.processes import StartServer, clean_env, free_port
from tests.support.redis_names import SAFE_CHANNEL, SAFE_KEY, outside, redis_names
from tests.support.sse import SSEEvent, SSEStream, open_stream

SECRET = "switchboard-test-secret-0123456789-abcdefghij"  # 45 characters
OTHER_SECRET = "a-different-secret-that-signs-nothing-here-0123"
TARGET = "target"  # the session every refused request aims at
OTHER = "other"  # another customer's session
ALICE = "alice"  # the agent who rightfully acts
BOB = "bob"  # another agent
# Longest wait for one plain (non-stream) request: a stream opened by mistake fails the test.
REQUEST_DEADLINE = 5.0
# How long a stream must stay silent to show that a refused request published nothing.
QUIET = 0.2
# Bounded wait for a limit to recover (a subprocess is bounded by tests.support.processes).
RECOVER_DEADLINE = 5.0
AGENT_TOKEN_TTL = 8 * 3600

RunPy = Callable[..., subprocess.CompletedProcess[str]]


# --- requests ----------------------------------------------------------------------------------


def with_token(path: str, token: str) -> str:
    return f"{path}?token={token}"


async def refused(
    client: AppClient,
    method: str,
    path: str | URL,
    body: Any = None,
    *,
    status: int,
    code: str,
    headers: Mapping[str, str] | None = None,
    what: str = "",
) -> Reply:
    """The request fails with ``status`` and the JSON error ``code``; a 401 carries the Bearer
    challenge."""
    reply = await exchange(client, method, path, body, status=status, headers=headers, what=what)
    assert reply.body["error"]["code"] == code, (what, method, path, reply.body)
    if status == 401:
        challenge = reply.headers.get("WWW-Authenticate", "")
        assert challenge.startswith("Bearer"), (what, method, path, dict(reply.headers))
    return reply


def forge(
    kind: str,
    subject: str,
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    drop: str | None = None,
    **changes: Any,
) -> str:
    """A token made with PyJWT directly, so that it can be wrong in any way."""
    now = int(time.time())
    claims: dict[str, Any] = {"typ": kind, "sub": subject, "iat": now, "exp": now + 600}
    claims.update(changes)
    if drop is not None:
        del claims[drop]
    return jwt.encode(claims, None if algorithm == "none" else secret, algorithm=algorithm)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


# --- a secure app with its customers and agents ------------------------------------------------


@dataclass
class World:
    """A secure app with two customer sessions (TARGET, OTHER) and two agents (ALICE, BOB)."""

    client: AppClient
    authority: TokenAuthority
    customer: str  # TARGET's token, as the app handed it out
    other_customer: str  # OTHER's token
    alice: str
    bob: str


async def create(client: AppClient, name: str) -> str:
    """Create session ``name`` without a token; return the session token the app hands out."""
    body = await api.create(client, name)
    assert body["session_name"] == name
    result: str = body["token"]
    return result


async def secure_client(make_client: MakeClient, settings: Settings, **changes: Any) -> AppClient:
    """The real app with authentication on (the suite's settings are insecure by default)."""
    client: AppClient = await make_client(settings, insecure=False, secret=SECRET, **changes)
    return client


async def make_world(make_client: MakeClient, settings: Settings, **changes: Any) -> World:
    client = await secure_client(make_client, settings, **changes)
    authority = TokenAuthority(SECRET)
    return World(
        client=client,
        authority=authority,
        customer=await create(client, TARGET),
        other_customer=await create(client, OTHER),
        alice=authority.mint("agent", ALICE, 600),
        bob=authority.mint("agent", BOB, 600),
    )


async def bring_to(world: World, status: str) -> None:
    """TARGET (in bot_active) brought to ``status`` with valid tokens (held by ALICE)."""
    client = world.client
    if status in ("waiting_agent", "agent_active"):
        await call(
            client,
            "POST",
            f"{CHATBOT}/manual/escalate",
            {"session_name": TARGET},
            status=200,
            headers=bearer(world.customer),
        )
    if status == "agent_active":
        await call(
            client, "POST", f"{WORKBENCH}/sessions/{TARGET}/takeover", status=200, headers=bearer(world.alice)
        )


async def snapshot(world: World, name: str = TARGET) -> dict[str, Any]:
    """The session, its transcript and the queue, read with valid tokens."""
    client = world.client
    session = await call(
        client, "GET", f"{WORKBENCH}/sessions/{name}", status=200, headers=bearer(world.alice)
    )
    messages = await call(
        client, "GET", f"{WORKBENCH}/sessions/{name}/messages", status=200, headers=bearer(world.alice)
    )
    queue = await call(client, "GET", f"{WORKBENCH}/sessions", status=200, headers=bearer(world.alice))
    return {"session": session, "messages": messages["messages"], "queue": queue["sessions"]}


@asynccontextmanager
async def watching(world: World) -> AsyncIterator[tuple[SSEStream, SSEStream]]:
    """TARGET's session stream (customer token) and ALICE's agent stream (her own channel and
    the broadcast), both opened properly with ``?token=``."""
    async with AsyncExitStack() as stack:
        session_stream, _ = await stack.enter_async_context(
            open_stream(world.client, with_token(f"{CHATBOT}/sessions/{TARGET}/events", world.customer))
        )
        agent_stream, _ = await stack.enter_async_context(
            open_stream(world.client, with_token(f"{WORKBENCH}/agents/{ALICE}/events", world.alice))
        )
        yield session_stream, agent_stream


async def assert_only_markers(
    world: World, session_stream: SSEStream, agent_stream: SSEStream, marker: str
) -> None:
    """Publish markers with valid tokens (a customer message on TARGET, a transfer request on
    the broadcast) and check that they are the first events each stream sees: nothing was
    published before them. Faster than waiting for silence, and just as strict."""
    client = world.client
    sent = await call(
        client,
        "POST",
        f"{CHATBOT}/chat",
        {"session_name": TARGET, "content": marker},
        status=200,
        headers=bearer(world.customer),
    )
    held_by_alice = (sent["session"]["status"], sent["session"]["agent_id"]) == ("agent_active", ALICE)
    marker_token = await create(client, marker)
    await call(
        client,
        "POST",
        f"{CHATBOT}/manual/escalate",
        {"session_name": marker},
        status=200,
        headers=bearer(marker_token),
    )

    first = (await session_stream.take(1))[0]
    assert first.type == "new_message", first
    assert first.payload["message"]["content"] == marker, first

    wanted = {"transfer_request"} | ({"new_message"} if held_by_alice else set())
    seen: list[SSEEvent] = []
    async with asyncio.timeout(REQUEST_DEADLINE):
        while wanted and len(seen) < 5:
            event = (await agent_stream.take(1))[0]
            seen.append(event)
            if event.type == "transfer_request":
                assert event.payload["session_name"] == marker, seen
            elif event.type == "new_message":
                assert event.payload["message"]["content"] == marker, seen
            else:
                raise AssertionError(f"unexpected event on the agent stream: {seen}")
            assert event.type in wanted, seen
            wanted.discard(event.type)
    assert not wanted, seen


# --- 1. every endpoint x every bad credential --------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    id: str
    method: str
    path: str  # {s}: the target session, {a}: the rightful agent
    side: str  # "chatbot" (customer token) or "workbench" (agent token)
    state: str  # the status TARGET is brought to, where the rightful request succeeds
    body: dict[str, Any] | None = None
    stream: bool = False
    # Acts as (or streams for) ALICE: another agent's token is refused too.
    agent_bound: bool = False

    @property
    def url(self) -> str:
        return self.path.format(s=TARGET, a=ALICE)

    @property
    def rightful(self) -> tuple[str, str]:
        """The principal the endpoint grants this request to."""
        return ("session", TARGET) if self.side == "chatbot" else ("agent", ALICE)


ENDPOINTS = [
    Endpoint(
        "chat",
        "POST",
        f"{CHATBOT}/chat",
        "chatbot",
        "bot_active",
        {"session_name": TARGET, "content": "hello"},
    ),
    Endpoint(
        "escalate", "POST", f"{CHATBOT}/manual/escalate", "chatbot", "bot_active", {"session_name": TARGET}
    ),
    Endpoint("chatbot-session", "GET", CHATBOT + "/sessions/{s}", "chatbot", "bot_active"),
    Endpoint("chatbot-messages", "GET", CHATBOT + "/sessions/{s}/messages", "chatbot", "bot_active"),
    Endpoint("chatbot-events", "GET", CHATBOT + "/sessions/{s}/events", "chatbot", "bot_active", stream=True),
    Endpoint("list", "GET", f"{WORKBENCH}/sessions", "workbench", "waiting_agent"),
    Endpoint("workbench-session", "GET", WORKBENCH + "/sessions/{s}", "workbench", "waiting_agent"),
    Endpoint("workbench-messages", "GET", WORKBENCH + "/sessions/{s}/messages", "workbench", "waiting_agent"),
    Endpoint(
        "workbench-events",
        "GET",
        WORKBENCH + "/sessions/{s}/events",
        "workbench",
        "waiting_agent",
        stream=True,
    ),
    Endpoint(
        "takeover",
        "POST",
        WORKBENCH + "/sessions/{s}/takeover",
        "workbench",
        "waiting_agent",
        {"agent_id": ALICE},
        agent_bound=True,
    ),
    Endpoint(
        "release",
        "POST",
        WORKBENCH + "/sessions/{s}/release",
        "workbench",
        "agent_active",
        {"agent_id": ALICE},
        agent_bound=True,
    ),
    Endpoint(
        "close",
        "POST",
        WORKBENCH + "/sessions/{s}/close",
        "workbench",
        "agent_active",
        {"agent_id": ALICE},
        agent_bound=True,
    ),
    Endpoint(
        "agent-message",
        "POST",
        WORKBENCH + "/sessions/{s}/messages",
        "workbench",
        "agent_active",
        {"agent_id": ALICE, "content": "hello"},
        agent_bound=True,
    ),
    Endpoint(
        "agent-events",
        "GET",
        WORKBENCH + "/agents/{a}/events",
        "workbench",
        "agent_active",
        stream=True,
        agent_bound=True,
    ),
]

# Authorization headers that are not "Bearer <token>" at all (None: no header).
MALFORMED_HEADERS: dict[str, str | None] = {
    "no-token": None,
    "bearer-alone": "Bearer",
    "bearer-blank": "Bearer    ",
    "basic": "Basic x",
    "token-scheme": "Token abc",
}

# Tokens that must never verify, each made for the endpoint's rightful (kind, subject).
BAD_TOKENS: dict[str, Callable[[str, str], str]] = {
    "not-a-jwt": lambda kind, subject: "not-a-jwt",
    "three-garbage-parts": lambda kind, subject: "a.b.c",
    "bad-signature": lambda kind, subject: forge(kind, subject, secret=OTHER_SECRET),
    "expired": lambda kind, subject: forge(
        kind, subject, iat=int(time.time()) - 3600, exp=int(time.time()) - 60
    ),
    "wrong-typ": lambda kind, subject: forge("admin", subject),
    "missing-exp": lambda kind, subject: forge(kind, subject, drop="exp"),
    "missing-iat": lambda kind, subject: forge(kind, subject, drop="iat"),
    "missing-sub": lambda kind, subject: forge(kind, subject, drop="sub"),
    "missing-typ": lambda kind, subject: forge(kind, subject, drop="typ"),
    "alg-none": lambda kind, subject: forge(kind, subject, algorithm="none"),
    "unsafe-sub": lambda kind, subject: forge(kind, "a*"),
    "tampered-payload": lambda kind, subject: tamper(kind, subject),
}


def tamper(kind: str, subject: str) -> str:
    """A token signed for someone else, with its payload swapped for ``subject``'s."""
    header, _, signature = forge(kind, "someone-else").split(".")
    payload = forge(kind, subject).split(".")[1]
    return f"{header}.{payload}.{signature}"


@dataclass(frozen=True)
class Attempt:
    label: str
    headers: dict[str, str]
    query_token: str | None  # sent as ?token= instead of a header
    status: int
    code: str
    body: dict[str, Any] | None


def failing_attempts(endpoint: Endpoint, world: World) -> list[Attempt]:
    """Every refused way of calling ``endpoint``: 401s, then 403s."""
    body = endpoint.body
    attempts = [
        Attempt(label, {} if value is None else {"Authorization": value}, None, 401, "unauthorized", body)
        for label, value in MALFORMED_HEADERS.items()
    ]
    kind, subject = endpoint.rightful
    for label, make in BAD_TOKENS.items():
        token = make(kind, subject)
        attempts.append(Attempt(label, bearer(token), None, 401, "unauthorized", body))
        if endpoint.stream:
            attempts.append(Attempt(f"{label} (?token=)", {}, token, 401, "unauthorized", body))
    if endpoint.side == "chatbot":
        forbidden = {
            "wrong-kind": world.alice,
            "other-session": world.other_customer,
            "other-agent": world.bob,
        }
    else:
        forbidden = {"wrong-kind": world.customer, "other-session": world.other_customer}
        if endpoint.agent_bound:
            forbidden["other-agent"] = world.bob  # the body still says ALICE
    for label, token in forbidden.items():
        attempts.append(Attempt(label, bearer(token), None, 403, "forbidden", body))
        if endpoint.stream:
            attempts.append(Attempt(f"{label} (?token=)", {}, token, 403, "forbidden", body))
    return attempts


async def rightful_request(world: World, endpoint: Endpoint) -> None:
    """The same request with the rightful token succeeds: the refusals were about the token."""
    token = world.customer if endpoint.side == "chatbot" else world.alice
    if endpoint.stream:
        async with open_stream(world.client, endpoint.url, headers=bearer(token)) as (_, connected):
            assert connected.type == "connected"
        return
    await call(
        world.client,
        endpoint.method,
        endpoint.url,
        endpoint.body,
        status=200,
        headers=bearer(token),
        what="rightful",
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.id for e in ENDPOINTS])
async def test_every_bad_credential_is_refused(
    make_client: MakeClient, settings: Settings, endpoint: Endpoint
) -> None:
    """Each endpoint x {missing, malformed, forged, expired, wrong kind, other session, other
    agent}: the right JSON 401/403, no stream, no state change, nothing published."""
    world = await make_world(make_client, settings)
    await bring_to(world, endpoint.state)
    async with watching(world) as (session_stream, agent_stream):
        before = await snapshot(world)
        for attempt in failing_attempts(endpoint, world):
            path = endpoint.url
            if attempt.query_token is not None:
                path = str(URL(path).with_query(token=attempt.query_token))
            await refused(
                world.client,
                endpoint.method,
                path,
                attempt.body,
                status=attempt.status,
                code=attempt.code,
                headers=attempt.headers,
                what=f"[{attempt.label}]",
            )
            assert await snapshot(world) == before, f"[{attempt.label}] changed state"
        await assert_only_markers(world, session_stream, agent_stream, "marker")
    await rightful_request(world, endpoint)


# --- 2. tokens that work, where they work ------------------------------------------------------


async def test_created_session_token_works(make_client: MakeClient, settings: Settings) -> None:
    """POST /sessions hands out a session token that works in a header and as ?token= on the
    stream, for that session's chat, escalate, state, transcript and events."""
    client = await secure_client(make_client, settings, session_token_ttl=120)
    token = await create(client, "s1")
    incarnation = (await call(client, "GET", f"{CHATBOT}/sessions/s1", headers=bearer(token)))["incarnation"]
    assert TokenAuthority(SECRET).verify(token) == Principal("session", "s1", incarnation)
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == 120

    unnamed = await call(client, "POST", f"{CHATBOT}/sessions", status=201)
    assert TokenAuthority(SECRET).verify(unnamed["token"]) == Principal(
        "session", unnamed["session_name"], unnamed["incarnation"]
    )

    events = f"{CHATBOT}/sessions/s1/events"
    async with open_stream(client, with_token(events, token)) as (by_query, connected):
        assert connected.payload["session_name"] == "s1"
        async with open_stream(client, events, headers=bearer(token)) as (by_header, _):
            await call(
                client,
                "POST",
                f"{CHATBOT}/chat",
                {"session_name": "s1", "content": "hello"},
                status=200,
                headers=bearer(token),
            )
            await call(
                client,
                "POST",
                f"{CHATBOT}/manual/escalate",
                {"session_name": "s1"},
                status=200,
                headers=bearer(token),
            )
            for stream in (by_query, by_header):
                kinds = [event.type for event in await stream.take(3)]
                assert kinds == ["new_message", "new_message", "status_change"], kinds
    session = await call(client, "GET", f"{CHATBOT}/sessions/s1", status=200, headers=bearer(token))
    assert session["status"] == "waiting_agent"
    transcript = await call(
        client, "GET", f"{CHATBOT}/sessions/s1/messages", status=200, headers=bearer(token)
    )
    assert [m["role"] for m in transcript["messages"]] == ["customer", "bot"]


async def test_chat_without_token_starts_nothing(make_client: MakeClient, settings: Settings) -> None:
    """With tokens required a conversation starts only through POST /sessions: POST /chat
    without a token is a 401 that stores nothing, for a new session and an existing one alike
    (an anonymous client cannot fill the store, or the queue, by chatting)."""
    client = await secure_client(make_client, settings)
    made = await create(client, "made")
    for path in (f"{CHATBOT}/chat", f"{CHATBOT}/chat/stream"):
        for name in ("new-one", "made"):
            await refused(
                client,
                "POST",
                path,
                {"session_name": name, "content": "hello"},
                status=401,
                code="unauthorized",
                what=f"{path} {name}",
            )
    transcript = await call(
        client, "GET", f"{CHATBOT}/sessions/made/messages", status=200, headers=bearer(made)
    )
    assert transcript["messages"] == []
    assert await create(client, "new-one")  # nothing was started under that name


CUSTOMER_FORBIDDEN = [
    ("GET", f"{CHATBOT}/sessions/{OTHER}", None),
    ("GET", f"{CHATBOT}/sessions/{OTHER}/messages", None),
    ("GET", f"{CHATBOT}/sessions/{OTHER}/events", None),
    ("POST", f"{CHATBOT}/chat", {"session_name": OTHER, "content": "hello"}),
    ("POST", f"{CHATBOT}/manual/escalate", {"session_name": OTHER}),
    ("GET", f"{WORKBENCH}/sessions", None),
    ("GET", f"{WORKBENCH}/sessions/{TARGET}", None),
    ("GET", f"{WORKBENCH}/sessions/{TARGET}/messages", None),
    ("GET", f"{WORKBENCH}/sessions/{TARGET}/events", None),
    ("POST", f"{WORKBENCH}/sessions/{TARGET}/takeover", {"agent_id": ALICE}),
    ("POST", f"{WORKBENCH}/sessions/{TARGET}/takeover", None),
    ("GET", f"{WORKBENCH}/agents/{TARGET}/events", None),
]


async def test_customer_token_is_confined_to_its_session(make_client: MakeClient, settings: Settings) -> None:
    """A customer token cannot read or act on another session, nor use the workbench, even
    for its own session (403 each, nothing changes); its own session still works."""
    world = await make_world(make_client, settings)
    before = {name: await snapshot(world, name) for name in (TARGET, OTHER)}
    for method, path, body in CUSTOMER_FORBIDDEN:
        await refused(
            world.client,
            method,
            path,
            body,
            status=403,
            code="forbidden",
            headers=bearer(world.customer),
            what="header",
        )
        if path.endswith("/events"):
            await refused(
                world.client,
                method,
                with_token(path, world.customer),
                body,
                status=403,
                code="forbidden",
                what="?token=",
            )
    assert {name: await snapshot(world, name) for name in (TARGET, OTHER)} == before
    await call(
        world.client, "GET", f"{CHATBOT}/sessions/{TARGET}", status=200, headers=bearer(world.customer)
    )


async def test_agent_token_works_on_the_workbench(make_client: MakeClient, settings: Settings) -> None:
    """An agent token lists, reads and acts on the workbench; actions without agent_id are done
    as the token's agent; any agent may read, only the holder acts."""
    world = await make_world(make_client, settings)
    client, alice, bob = world.client, bearer(world.alice), bearer(world.bob)
    await bring_to(world, "waiting_agent")
    queue = await call(client, "GET", f"{WORKBENCH}/sessions", status=200, headers=alice)
    assert [s["session_name"] for s in queue["sessions"]] == [TARGET]
    base = f"{WORKBENCH}/sessions/{TARGET}"

    held = await call(client, "POST", f"{base}/takeover", status=200, headers=alice)
    assert (held["status"], held["agent_id"]) == ("agent_active", ALICE)
    said = await call(
        client, "POST", f"{base}/messages", {"content": "hi, Alice here"}, status=200, headers=alice
    )
    assert (said["message"]["role"], said["message"]["agent_id"]) == ("agent", ALICE)
    for path in (base, f"{base}/messages", f"{WORKBENCH}/sessions?status=agent_active"):
        await call(client, "GET", path, status=200, headers=bob)
    # Bob's token is valid, but the session is Alice's: the store refuses (409), nothing moves.
    await refused(
        client, "POST", f"{base}/messages", {"content": "me too"}, status=409, code="conflict", headers=bob
    )
    await refused(client, "POST", f"{base}/release", status=409, code="conflict", headers=bob)
    released = await call(client, "POST", f"{base}/release", {}, status=200, headers=alice)
    assert (released["status"], released["agent_id"]) == ("bot_active", None)
    await call(client, "POST", f"{base}/takeover", {"agent_id": ALICE}, status=200, headers=alice)
    closed = await call(client, "POST", f"{base}/close", status=200, headers=alice)
    assert closed["status"] == "closed"
    transcript = await call(client, "GET", f"{base}/messages", status=200, headers=alice)
    assert [m["content"] for m in transcript["messages"]] == ["hi, Alice here"]


AGENT_ACTIONS = [e for e in ENDPOINTS if e.agent_bound and not e.stream]


@pytest.mark.parametrize("endpoint", AGENT_ACTIONS, ids=[e.id for e in AGENT_ACTIONS])
async def test_body_agent_id_must_match_the_token(
    make_client: MakeClient, settings: Settings, endpoint: Endpoint
) -> None:
    """An agent_id in the body that is not the token's is a 403 that changes and publishes
    nothing; the token's own agent_id is accepted."""
    world = await make_world(make_client, settings)
    await bring_to(world, endpoint.state)
    impostor = {**(endpoint.body or {}), "agent_id": BOB}
    async with watching(world) as (session_stream, agent_stream):
        before = await snapshot(world)
        await refused(
            world.client,
            endpoint.method,
            endpoint.url,
            impostor,
            status=403,
            code="forbidden",
            headers=bearer(world.alice),
        )
        assert await snapshot(world) == before
        await assert_only_markers(world, session_stream, agent_stream, "marker")
    done = await call(
        world.client, endpoint.method, endpoint.url, endpoint.body, status=200, headers=bearer(world.alice)
    )
    assert done != before["session"]


async def test_agent_stream_is_its_own(make_client: MakeClient, settings: Settings) -> None:
    """An agent opens its own stream (header or ?token=), not another agent's (403), and a
    customer token opens no agent stream."""
    world = await make_world(make_client, settings)
    own = f"{WORKBENCH}/agents/{ALICE}/events"
    async with open_stream(world.client, with_token(own, world.alice)) as (_, connected):
        assert connected.payload["agent_id"] == ALICE
        async with open_stream(world.client, own, headers=bearer(world.alice)):
            pass
    for path, token in (
        (f"{WORKBENCH}/agents/{BOB}/events", world.alice),
        (own, world.bob),
        (own, world.customer),
        (f"{WORKBENCH}/agents/{TARGET}/events", world.customer),
    ):
        await refused(world.client, "GET", with_token(path, token), status=403, code="forbidden")
        await refused(world.client, "GET", path, status=403, code="forbidden", headers=bearer(token))


PLAIN_ENDPOINTS = [e for e in ENDPOINTS if not e.stream]


@pytest.mark.parametrize("endpoint", PLAIN_ENDPOINTS, ids=[e.id for e in PLAIN_ENDPOINTS])
async def test_query_token_only_on_streams(
    make_client: MakeClient, settings: Settings, endpoint: Endpoint
) -> None:
    """A valid token in ?token= is ignored outside event streams: 401, nothing changes; the
    same token in the header works."""
    world = await make_world(make_client, settings)
    await bring_to(world, endpoint.state)
    token = world.customer if endpoint.side == "chatbot" else world.alice
    before = await snapshot(world)
    await refused(
        world.client,
        endpoint.method,
        with_token(endpoint.url, token),
        endpoint.body,
        status=401,
        code="unauthorized",
    )
    assert await snapshot(world) == before
    await rightful_request(world, endpoint)


# --- 3. the handoff, with tokens ---------------------------------------------------------------


async def test_handoff_end_to_end_with_tokens(make_client: MakeClient, settings: Settings) -> None:
    """Customer (session token) to bot to agent (agent token) and back, every stream opened
    with ?token=, each side seeing what it should and nothing of the other agent's."""
    client = await secure_client(make_client, settings)
    authority = TokenAuthority(SECRET)
    alice, bob = authority.mint("agent", ALICE, 600), authority.mint("agent", BOB, 600)
    customer = await create(client, "handoff")  # a conversation starts here, with its token
    chat_path, base = f"{CHATBOT}/chat", f"{WORKBENCH}/sessions/handoff"
    hello = {"session_name": "handoff", "content": "hello"}
    await call(client, "POST", chat_path, hello, status=200, headers=bearer(customer))

    async def customer_says(content: str) -> dict[str, Any]:
        body = await call(
            client,
            "POST",
            chat_path,
            {"session_name": "handoff", "content": content},
            status=200,
            headers=bearer(customer),
        )
        result: dict[str, Any] = body
        return result

    async with AsyncExitStack() as stack:

        async def stream(path: str, token: str) -> SSEStream:
            opened, _ = await stack.enter_async_context(open_stream(client, with_token(path, token)))
            return opened

        to_customer = await stream(f"{CHATBOT}/sessions/handoff/events", customer)
        to_alice = await stream(f"{WORKBENCH}/agents/{ALICE}/events", alice)
        to_bob = await stream(f"{WORKBENCH}/agents/{BOB}/events", bob)

        asked = await customer_says("I want a human please")
        assert asked["session"]["status"] == "waiting_agent"
        assert [e.type for e in await to_customer.take(3)] == ["new_message", "new_message", "status_change"]
        for agent_stream in (to_alice, to_bob):
            transfer = await agent_stream.next_of("transfer_request")
            assert transfer.payload["session_name"] == "handoff"
            assert transfer.data["source"] == "ai_chatbot"

        queue = await call(client, "GET", f"{WORKBENCH}/sessions", status=200, headers=bearer(alice))
        assert [s["session_name"] for s in queue["sessions"]] == ["handoff"]
        held = await call(client, "POST", f"{base}/takeover", status=200, headers=bearer(alice))
        assert held["agent_id"] == ALICE
        joined, changed = await to_customer.take(2)
        assert (joined.type, joined.payload["agent_id"], joined.data["source"]) == (
            "agent_joined",
            ALICE,
            "agent_workbench",
        )
        assert (changed.type, changed.payload["status"]) == ("status_change", "agent_active")
        for agent_stream in (to_alice, to_bob):
            assert (await agent_stream.next_of("status_change")).payload["agent_id"] == ALICE
        on_session = await stream(f"{base}/events", alice)

        routed = await customer_says("my order is late")
        assert routed["reply"] is None
        for seen in (to_customer, to_alice, on_session):
            event = await seen.next_of("new_message")
            assert event.payload["message"]["content"] == "my order is late"
        await call(
            client, "POST", f"{base}/messages", {"content": "On it!"}, status=200, headers=bearer(alice)
        )
        answer = await to_customer.next_of("new_message")
        assert (answer.payload["message"]["role"], answer.payload["message"]["agent_id"]) == ("agent", ALICE)
        await refused(
            client,
            "POST",
            f"{base}/messages",
            {"content": "bob here"},
            status=409,
            code="conflict",
            headers=bearer(bob),
        )
        await to_bob.assert_quiet(QUIET)  # Bob holds nothing: no customer message reached him

        await call(client, "POST", f"{base}/release", status=200, headers=bearer(alice))
        left, back = await to_customer.take(2)
        assert (left.type, back.type, back.payload["status"]) == ("agent_left", "status_change", "bot_active")
        again = await customer_says("hello again")
        assert again["reply"] is not None
        await call(client, "POST", f"{base}/takeover", status=200, headers=bearer(alice))
        await call(client, "POST", f"{base}/close", status=200, headers=bearer(alice))
        ending = await to_customer.take(5)
        assert [e.type for e in ending] == [
            "new_message",
            "new_message",
            "agent_joined",
            "status_change",
            "status_change",
        ], ending
        assert [e.payload["status"] for e in ending[3:]] == ["agent_active", "closed"], ending
        await refused(
            client,
            "POST",
            chat_path,
            {"session_name": "handoff", "content": "hi?"},
            status=409,
            code="conflict",
            headers=bearer(customer),
        )
    transcript = await call(
        client, "GET", f"{CHATBOT}/sessions/handoff/messages", status=200, headers=bearer(customer)
    )
    assert [m["role"] for m in transcript["messages"]] == [
        "customer",
        "bot",
        "customer",
        "bot",
        "customer",
        "agent",
        "customer",
        "bot",
    ]


# --- 4. per-token limits -----------------------------------------------------------------------


async def test_rate_limit_per_token_triggers_and_recovers(
    make_client: MakeClient, settings: Settings
) -> None:
    """A burst of one agent's actions gets a JSON 429 rate_limited with Retry-After, stores
    nothing, leaves other tokens alone, and passes again after a short (bounded) wait."""
    world = await make_world(make_client, settings, rate_limit=2, rate_burst=3)
    client = world.client
    await bring_to(world, "agent_active")  # Alice's takeover took one of her three
    path = f"{WORKBENCH}/sessions/{TARGET}/messages"

    async def alice_says(content: str) -> tuple[int, Mapping[str, str], Any]:
        async with client.post(path, json={"content": content}, headers=bearer(world.alice)) as response:
            assert response.content_type == "application/json", response.headers
            return response.status, response.headers, await response.json()

    accepted, limited = 0, None
    async with asyncio.timeout(REQUEST_DEADLINE):
        for attempt in range(10):
            status, headers, answer = await alice_says(f"m{attempt}")
            if status == 429:
                limited = (headers, answer)
                break
            assert status == 200, answer
            accepted += 1
    assert limited is not None, "ten actions in a burst were never limited"
    assert 1 <= accepted <= 4, accepted  # burst 3, one spent on the takeover, a little refill
    headers, answer = limited
    assert answer["error"]["code"] == "rate_limited", answer
    retry_after = headers.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, headers

    def agent_lines(state: dict[str, Any]) -> int:
        return sum(1 for m in state["messages"] if m["role"] == "agent")

    assert agent_lines(await snapshot(world)) == accepted
    # Other tokens are not affected: Bob acts, the customer chats.
    await create(client, "for-bob")
    await call(
        client, "POST", f"{WORKBENCH}/sessions/for-bob/takeover", status=200, headers=bearer(world.bob)
    )
    await call(
        client,
        "POST",
        f"{CHATBOT}/chat",
        {"session_name": TARGET, "content": "still?"},
        status=200,
        headers=bearer(world.customer),
    )

    async with asyncio.timeout(RECOVER_DEADLINE):  # one request back every half second
        for _ in range(100):
            status, _, answer = await alice_says("after")
            if status == 200:
                break
            assert status == 429, answer
            await asyncio.sleep(0.1)
    assert status == 200, answer
    assert agent_lines(await snapshot(world)) == accepted + 1


async def test_streams_per_token_limit_triggers_and_recovers(
    make_client: MakeClient, settings: Settings
) -> None:
    """With max_streams_per_token=2 a token's third stream is a JSON 429 too_many_streams with
    Retry-After; other tokens still open; closing one lets the token open again."""
    world = await make_world(make_client, settings, max_streams_per_token=2)
    client = world.client
    own = with_token(f"{WORKBENCH}/agents/{ALICE}/events", world.alice)
    on_session = with_token(f"{WORKBENCH}/sessions/{TARGET}/events", world.alice)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(open_stream(client, own))
        first = AsyncExitStack()
        await first.enter_async_context(open_stream(client, on_session))
        try:
            for path in (own, on_session):
                reply = await refused(client, "GET", path, status=429, code="too_many_streams")
                retry_after = reply.headers.get("Retry-After", "")
                assert retry_after.isdigit() and int(retry_after) >= 1
            # Other tokens are not affected.
            await stack.enter_async_context(
                open_stream(client, with_token(f"{WORKBENCH}/agents/{BOB}/events", world.bob))
            )
            await stack.enter_async_context(
                open_stream(client, with_token(f"{CHATBOT}/sessions/{TARGET}/events", world.customer))
            )
        finally:
            await first.aclose()
        recovered = False
        async with asyncio.timeout(RECOVER_DEADLINE):
            for _ in range(100):
                async with client.get(own, timeout=aiohttp.ClientTimeout(total=None)) as response:
                    if response.status == 200:
                        assert (await SSEStream(response).next()).type == "connected"
                        recovered = True
                        break
                    assert response.status == 429, await response.text()
                await asyncio.sleep(0.05)
        assert recovered


# --- 5. secure by default ----------------------------------------------------------------------


def test_secret_is_required_by_the_app_and_settings() -> None:
    """No secret and not insecure: create_app refuses; a secret under 32 characters is refused
    by Settings and by TokenAuthority."""
    with pytest.raises(ValueError, match="secret"):
        create_app(Settings(use_redis=False))
    for short in ("short", "x" * 31):
        with pytest.raises(ValueError, match="32"):
            Settings(use_redis=False, secret=short)
        with pytest.raises(ValueError, match="32"):
            TokenAuthority(short)
    create_app(Settings(use_redis=False, secret="x" * 32))
    create_app(Settings(use_redis=False, insecure=True))


@pytest.mark.parametrize(
    ("args", "env", "wanted"),
    [
        ((), {}, "refusing to start without a token secret"),
        ((), {"SWITCHBOARD_SECRET": "", "SWITCHBOARD_INSECURE": ""}, "refusing to start"),
        (("--secret", "too-short"), {}, "32"),
        ((), {"SWITCHBOARD_SECRET": "too-short"}, "32"),
    ],
    ids=["no-secret", "empty-variables", "short-flag", "short-env"],
)
def test_process_without_a_good_secret_refuses_to_start(
    run_py: RunPy, args: tuple[str, ...], env: dict[str, str], wanted: str
) -> None:
    """run.py without a (long enough) secret and without --insecure exits with status 2 and
    says why in one log line, without a traceback."""
    done = run_py(
        "--no-redis", "--host", "127.0.0.1", "--port", str(free_port()), *args, env=clean_env(**env)
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert wanted in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("via", ["env", "flag"])
async def test_process_with_a_secret_is_secure(server_process: StartServer, via: str) -> None:
    """With SWITCHBOARD_SECRET (or --secret) the process starts, /health says insecure false,
    and it asks for tokens signed with that secret."""
    args = ("--no-redis", "--secret", SECRET) if via == "flag" else ("--no-redis",)
    env = {"SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": SECRET if via == "env" else ""}
    server = server_process(*args, env=env)
    agent = TokenAuthority(SECRET).mint("agent", ALICE, 60)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_DEADLINE)) as http:
        async with http.get(f"{server.url}/health") as response:
            assert (await response.json())["insecure"] is False
        async with http.get(f"{server.url}{WORKBENCH}/sessions") as response:
            assert response.status == 401
        async with http.get(f"{server.url}{WORKBENCH}/sessions", headers=bearer(agent)) as response:
            assert response.status == 200
    assert "running with --insecure" not in server.log()


async def test_process_with_insecure_flag_says_so(server_process: StartServer) -> None:
    """--insecure starts without a secret, warns in the log, and /health says insecure true."""
    server = server_process(
        "--no-redis", "--insecure", env={"SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": ""}
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_DEADLINE)) as http:
        async with http.get(f"{server.url}/health") as response:
            assert (await response.json())["insecure"] is True
        async with http.get(f"{server.url}{WORKBENCH}/sessions") as response:
            assert response.status == 200
    assert "running with --insecure" in server.log()


# --- 6. run.py token ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "principal", "ttl"),
    [
        (("--agent", ALICE, "--secret", SECRET), {}, Principal("agent", ALICE), AGENT_TOKEN_TTL),
        (("--session", "s1", "--ttl", "60", "--secret", SECRET), {}, Principal("session", "s1"), 60),
        (("--agent", BOB), {"SWITCHBOARD_SECRET": SECRET}, Principal("agent", BOB), AGENT_TOKEN_TTL),
        (("--supervisor", "sue", "--secret", SECRET), {}, Principal("supervisor", "sue"), AGENT_TOKEN_TTL),
        (
            ("--session", "s1", "--incarnation", "0123456789abcdef", "--secret", SECRET),
            {},
            Principal("session", "s1", "0123456789abcdef"),
            7200,
        ),
    ],
    ids=["agent", "session-ttl", "secret-from-env", "supervisor", "session-incarnation"],
)
def test_token_command_mints_accepted_tokens(
    run_py: RunPy, args: tuple[str, ...], env: dict[str, str], principal: Principal, ttl: int
) -> None:
    """``run.py token`` prints one token that TokenAuthority(secret) accepts, for the asked
    principal and lifetime."""
    done = run_py("token", *args, env=clean_env(**env))
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    assert TokenAuthority(SECRET).verify(token) == principal
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == ttl
    assert abs(claims["iat"] - time.time()) < 60


@pytest.mark.parametrize(
    "args",
    [
        ("--agent", ALICE),
        ("--agent", "a*", "--secret", SECRET),
        ("--session", "a:b", "--secret", SECRET),
        ("--session", "a" * 65, "--secret", SECRET),
        ("--agent", ALICE, "--secret", "too-short"),
        ("--agent", ALICE, "--secret", SECRET, "--ttl", "-5"),
        ("--agent", ALICE, "--secret", SECRET, "--ttl", "0"),
        ("--secret", SECRET),
        ("--session", "s1", "--incarnation", "not-hex", "--secret", SECRET),
        ("--agent", ALICE, "--incarnation", "0123456789abcdef", "--secret", SECRET),
    ],
    ids=[
        "no-secret",
        "unsafe-agent",
        "unsafe-session",
        "long-session",
        "short-secret",
        "negative-ttl",
        "zero-ttl",
        "nobody",
        "bad-incarnation",
        "agent-incarnation",
    ],
)
def test_token_command_refuses(run_py: RunPy, args: tuple[str, ...]) -> None:
    """``run.py token`` with no secret, an invalid name, a short secret, a non-positive lifetime,
    no principal or a malformed or misplaced incarnation exits with status 2 and prints no token."""
    done = run_py("token", *args, env=clean_env())
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr, done.stderr


# --- 7. channel injection ----------------------------------------------------------------------

UNSAFE_NAMES = {
    "star": "a*",
    "question": "a?",
    "brackets": "a[bc]",
    "colon": "a:b",
    "newline": "a\nb",
    "trailing-newline": "ab\n",
    "dotdot": "..",
    "dotdot-inside": "a..b",
    "slash": "a/b",
    "space": "a b",
    "accent": "é",
    "cjk": "会话",
    "empty": "",
    "65-chars": "a" * 65,
}


def segment(name: str) -> str:
    """``name`` as one URL path segment, every byte but [A-Za-z0-9_-] percent-encoded (so the
    client cannot resolve "..", and the server sees exactly ``name``)."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c in "-_") else "".join(f"%{byte:02X}" for byte in c.encode())
        for c in name
    )


# (method, path, body, headers, status, code) of one request that must be refused.
Probe = tuple[str, str | URL, Any, dict[str, str], int, str]


def injection_requests(name: str, world: World) -> list[Probe]:
    """Every way to slip ``name`` in, each request otherwise valid: the body names, the query,
    and the path names of both sub-apps."""
    customer, alice = bearer(world.customer), bearer(world.alice)
    requests: list[Probe] = [
        ("POST", f"{CHATBOT}/sessions", {"session_name": name}, {}, 400, "validation_error"),
        ("POST", f"{CHATBOT}/chat", {"session_name": name, "content": "hi"}, {}, 400, "validation_error"),
        (
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": name, "content": "hi"},
            customer,
            400,
            "validation_error",
        ),
        ("POST", f"{CHATBOT}/manual/escalate", {"session_name": name}, customer, 400, "validation_error"),
        (
            "POST",
            f"{WORKBENCH}/sessions/{TARGET}/takeover",
            {"agent_id": name},
            alice,
            400,
            "validation_error",
        ),
        (
            "POST",
            f"{WORKBENCH}/sessions/{TARGET}/messages",
            {"agent_id": name, "content": "x"},
            alice,
            400,
            "validation_error",
        ),
        ("GET", URL(f"{WORKBENCH}/sessions").with_query(status=name), None, alice, 400, "validation_error"),
    ]
    status, code = (404, "not_found") if name == "" else (400, "invalid_name")
    part = segment(name)
    for side, headers in (("chatbot", customer), ("workbench", alice)):
        for suffix in ("", "/messages", "/events"):
            path = URL(f"/{side}/api/sessions/{part}{suffix}", encoded=True)
            requests.append(("GET", path, None, headers, status, code))
    for action, body in (("takeover", {}), ("release", {}), ("close", {}), ("messages", {"content": "x"})):
        path = URL(f"{WORKBENCH}/sessions/{part}/{action}", encoded=True)
        requests.append(("POST", path, body, alice, status, code))
    agent_stream = f"{WORKBENCH}/agents/{part}/events"
    requests.append(("GET", URL(agent_stream, encoded=True), None, alice, status, code))
    requests.append(("GET", URL(f"{agent_stream}?token={world.alice}", encoded=True), None, {}, status, code))
    return requests


@pytest.mark.parametrize("name", UNSAFE_NAMES.values(), ids=UNSAFE_NAMES.keys())
async def test_unsafe_names_never_reach_redis(
    make_client: MakeClient, settings: Settings, backend: str, name: str
) -> None:
    """Unsafe session names and agent ids in bodies, queries and paths are refused (400, or
    404 for an empty path segment) before any key or channel is built from them, and a stream
    for a wildcard never opens on anybody's events."""
    world = await make_world(make_client, settings)
    await bring_to(world, "agent_active")
    for victim in ("ab", "a1", "ab_", "a-b"):
        await create(world.client, victim)
    async with watching(world) as (session_stream, agent_stream):
        before = await snapshot(world)
        for method, path, body, headers, status, code in injection_requests(name, world):
            await refused(
                world.client, method, path, body, status=status, code=code, headers=headers, what=repr(name)
            )
        assert await snapshot(world) == before
        await assert_only_markers(world, session_stream, agent_stream, "marker")
        if backend == "redis":
            names = await redis_names(settings.redis_url)
            assert any(key.startswith("session:") for key in names.keys), names  # the store is Redis
            assert names.channels, "the open streams subscribe their channels"
            assert outside(names.keys, SAFE_KEY) == [], names.keys
            assert outside(names.channels, SAFE_CHANNEL) == [], names.channels
            assert names.patterns == 0  # never a pattern subscription


# --- 8. tokens stay out of the logs ------------------------------------------------------------


async def test_tokens_never_reach_the_logs(server_process: StartServer, redis_url: str) -> None:
    """A secure process at DEBUG, given good and bad tokens in headers and ?token=, on streams
    and plain endpoints, never writes a token (or its signature) to its log."""
    server = server_process(
        "--redis-url",
        redis_url,
        "--log-level",
        "DEBUG",
        env={"SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": SECRET, "USE_REDIS_SSE": "true"},
    )
    alice = TokenAuthority(SECRET).mint("agent", ALICE, 600)
    bad = [make("session", "logged") for make in BAD_TOKENS.values()]
    base = server.url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_DEADLINE)) as http:

        async def status_of(method: str, path: str, **kwargs: Any) -> int:
            async with http.request(method, f"{base}{path}", **kwargs) as response:
                await response.read()
                return response.status

        async with http.post(f"{base}{CHATBOT}/sessions", json={"session_name": "logged"}) as response:
            customer = (await response.json())["token"]
        session = f"{CHATBOT}/sessions/logged"
        assert await status_of("GET", session, headers=bearer(customer)) == 200
        assert await status_of("GET", with_token(session, customer)) == 401
        assert await status_of("GET", f"{WORKBENCH}/sessions", headers=bearer(customer)) == 403
        assert await status_of("GET", with_token(f"{WORKBENCH}/agents/{BOB}/events", alice)) == 403
        for token in bad:
            assert await status_of("GET", session, headers=bearer(token)) == 401
            assert await status_of("GET", with_token(f"{session}/events", token)) == 401
            assert (
                await status_of(
                    "POST",
                    f"{CHATBOT}/chat",
                    headers=bearer(token),
                    json={"session_name": "logged", "content": "x"},
                )
                == 401
            )
        async with (
            open_stream(http, f"{base}{with_token(f'{session}/events', customer)}") as (stream, _),
            open_stream(http, f"{base}{WORKBENCH}/agents/{ALICE}/events", headers=bearer(alice)),
        ):
            assert (
                await status_of(
                    "POST",
                    f"{CHATBOT}/chat",
                    headers=bearer(customer),
                    json={"session_name": "logged", "content": "human"},
                )
                == 200
            )
            await stream.next_of("status_change")
            assert (
                await status_of("POST", f"{WORKBENCH}/sessions/logged/takeover", headers=bearer(alice)) == 200
            )
    assert server.stop() == 0
    log = server.log()
    assert "stream opened" in log, log  # DEBUG was really on
    for token in [customer, alice, *bad]:
        assert token not in log, token
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            assert signature not in log, token
    assert re.search(r"token=\S", log) is None, log
