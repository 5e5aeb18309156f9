"""Every error of docs/api.md on both backends: the JSON error shape with the right status, never a
500, and a failed request changes no state and publishes nothing (an open session stream and
agent streams stay quiet, and a re-read of the state finds it unchanged)."""

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiohttp import ClientResponse
from redis.asyncio import Redis
from yarl import URL

from app.process.settings import Settings
from tests.support.api import CHATBOT, STATUSES, WORKBENCH
from tests.support.app_server import AppClient, MakeClient
from tests.support.sse import open_stream

MAX_BODY = 65_536
MAX_CONTENT = 4_000
MAX_REASON = 500
# How long every watched stream must stay silent after the failed requests.
QUIET = 0.2
S = "s-main"  # the session every test watches
HOLDER = "agent-1"
OTHER = "agent-2"
NO_BODY = object()


# --- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request: a JSON ``body`` (NO_BODY for none), or ``raw`` bytes with ``content_type``."""

    method: str
    path: str
    body: Any = NO_BODY
    raw: bytes | None = None
    content_type: str = "application/json"
    # Send the path exactly as written (percent-escapes kept), not normalised by the client.
    encoded: bool = False

    async def send(self, client: AppClient) -> ClientResponse:
        url: str | URL = URL(self.path, encoded=True) if self.encoded else self.path
        if self.raw is not None:
            headers = {"Content-Type": self.content_type}
            return await client.request(self.method, url, data=self.raw, headers=headers)
        if self.body is NO_BODY:
            return await client.request(self.method, url)
        return await client.request(self.method, url, json=self.body)

    def with_raw(self, raw: bytes, content_type: str = "application/json") -> "Call":
        return Call(self.method, self.path, raw=raw, content_type=content_type)

    def with_body(self, body: Any) -> "Call":
        return Call(self.method, self.path, body)


def create_call(name: Any = "new-one") -> Call:
    return Call("POST", f"{CHATBOT}/sessions", {"session_name": name})


def chat_call(name: Any = S, content: Any = "hello") -> Call:
    return Call("POST", f"{CHATBOT}/chat", {"session_name": name, "content": content})


def escalate_call(name: Any = S, reason: Any = "help") -> Call:
    return Call("POST", f"{CHATBOT}/manual/escalate", {"session_name": name, "reason": reason})


def action_call(action: str, agent_id: Any = HOLDER, name: str = S) -> Call:
    return Call("POST", f"{WORKBENCH}/sessions/{name}/{action}", {"agent_id": agent_id})


def agent_message_call(agent_id: Any = HOLDER, content: Any = "hi", name: str = S) -> Call:
    path = f"{WORKBENCH}/sessions/{name}/messages"
    return Call("POST", path, {"agent_id": agent_id, "content": content})


# Every action that takes a JSON body, as a valid request on the watched session.
ACTIONS: dict[str, Call] = {
    "create": create_call(),
    "chat": chat_call(),
    "escalate": escalate_call(),
    "takeover": action_call("takeover"),
    "release": action_call("release"),
    "close": action_call("close"),
    "agent_message": agent_message_call(),
}


async def expect_error(
    response: ClientResponse, status: int, fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """Assert the JSON error shape with ``status`` (and ``fields`` naming at least those keys)."""
    text = await response.text()
    where = f"{response.method} {response.url.raw_path}"
    assert response.status == status, f"{where}: {response.status} (want {status}): {text[:300]}"
    assert response.content_type == "application/json", f"{where}: {response.content_type}"
    body = json.loads(text)
    assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: {body}"
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], f"{where}: {error}"
    assert isinstance(error.get("message"), str) and error["message"], f"{where}: {error}"
    if fields is not None:
        assert isinstance(error.get("fields"), dict), f"{where}: no fields in {error}"
        assert set(fields) <= set(error["fields"]), f"{where}: fields {error['fields']}"
    result: dict[str, Any] = error
    return result


async def problems_of(
    client: AppClient, cases: Iterable[tuple[str, Call, int, Iterable[str] | None]]
) -> list[str]:
    """Send every case; the list of those that did not answer the expected error."""
    problems = []
    for label, call, status, fields in cases:
        response = await call.send(client)
        try:
            await expect_error(response, status, fields)
        except AssertionError as exc:
            problems.append(f"{label}: {exc}")
    return problems


async def ok(client: AppClient, call: Call, status: int = 200) -> dict[str, Any]:
    response = await call.send(client)
    text = await response.text()
    assert response.status == status, f"{call.method} {call.path}: {response.status} {text[:300]}"
    result: dict[str, Any] = json.loads(text)
    return result


async def in_status(client: AppClient, name: str, status: str) -> None:
    """Create ``name`` and bring it to ``status`` (held by HOLDER when agent_active)."""
    await ok(client, create_call(name), 201)
    if status == "waiting_agent":
        await ok(client, escalate_call(name))
    elif status == "agent_active":
        await ok(client, action_call("takeover", HOLDER, name))
    elif status == "closed":
        await ok(client, action_call("close", HOLDER, name))


# --- "nothing changed, nothing published" ------------------------------------------------------


async def snapshot(client: AppClient, names: Iterable[str]) -> dict[str, Any]:
    """Everything the API says about ``names`` and every status list."""
    state: dict[str, Any] = {}
    for name in names:
        state[name] = (
            await ok(client, Call("GET", f"{CHATBOT}/sessions/{name}")),
            await ok(client, Call("GET", f"{CHATBOT}/sessions/{name}/messages")),
        )
    for status in STATUSES:
        state[status] = await ok(client, Call("GET", f"{WORKBENCH}/sessions?status={status}"))
    return state


@asynccontextmanager
async def unchanged(client: AppClient, *names: str) -> AsyncIterator[None]:
    """Around failing requests: the session streams of ``names`` and both agents' streams
    (their channels and the broadcast) stay quiet, and the state reads back the same."""
    before = await snapshot(client, names)
    urls = [f"{CHATBOT}/sessions/{name}/events" for name in names]
    urls += [f"{WORKBENCH}/agents/{agent}/events" for agent in (HOLDER, OTHER)]
    async with AsyncExitStack() as stack:
        streams = [(await stack.enter_async_context(open_stream(client, url)))[0] for url in urls]
        yield
        await asyncio.gather(*(stream.assert_quiet(QUIET) for stream in streams))
    assert await snapshot(client, names) == before


# --- malformed bodies --------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes, str, int]] = [
    ("truncated JSON", b'{"session_name": ', "application/json", 400),
    ("two documents", b"{} {}", "application/json", 400),
    ("JSON array", b'[{"session_name": "s-main"}]', "application/json", 400),
    ("JSON string", b'"s-main"', "application/json", 400),
    ("JSON number", b"42", "application/json", 400),
    ("JSON null", b"null", "application/json", 400),
    ("invalid UTF-8", b'{"session_name": "\xff\xfe"}', "application/json", 400),
    ("text/plain", b'{"session_name": "s-main"}', "text/plain", 415),
    ("form", b"session_name=s-main", "application/x-www-form-urlencoded", 415),
    ("octet-stream", b'{"session_name": "s-main"}', "application/octet-stream", 415),
]


@pytest.mark.parametrize("action", ACTIONS)
async def test_malformed_body(client: AppClient, action: str) -> None:
    """Bad JSON, a non-object body and a non-JSON content type get 400/415 on every action."""
    await in_status(client, S, "bot_active")
    async with unchanged(client, S):
        problems = await problems_of(
            client,
            (
                (label, ACTIONS[action].with_raw(raw, ctype), status, None)
                for label, raw, ctype, status in MALFORMED
            ),
        )
    assert not problems, "\n".join(problems)


async def test_deeply_nested_json(client: AppClient) -> None:
    """JSON nested deeper than the parser's recursion limit (60 KB, under the size limit) is a
    400 on every action, not a 500."""
    raw = b"[" * 30_000 + b"]" * 30_000
    await in_status(client, S, "bot_active")
    async with unchanged(client, S):
        problems = await problems_of(
            client, ((action, call.with_raw(raw), 400, None) for action, call in ACTIONS.items())
        )
    assert not problems, "\n".join(problems)


# Per action: bodies that break its schema, and the fields the error must name.
SCHEMA_VIOLATIONS: dict[str, list[tuple[Any, set[str]]]] = {
    "create": [
        ({"session_name": "ok-1", "extra": 1}, {"extra"}),
        ({"name": "ok-1"}, {"name"}),
        ({"session_name": 5}, {"session_name"}),
        ({"session_name": ["ok-1"]}, {"session_name"}),
    ],
    "chat": [
        (NO_BODY, {"session_name", "content"}),
        ({}, {"session_name", "content"}),
        ({"session_name": S}, {"content"}),
        ({"content": "hi"}, {"session_name"}),
        ({"session_name": S, "content": 123}, {"content"}),
        ({"session_name": S, "content": None}, {"content"}),
        ({"session_name": S, "content": True}, {"content"}),
        ({"session_name": S, "content": ["hi"]}, {"content"}),
        ({"session_name": S, "content": {"text": "hi"}}, {"content"}),
        ({"session_name": 7, "content": "hi"}, {"session_name"}),
        ({"session_name": S, "content": "hi", "role": "agent"}, {"role"}),
        ({"session_name": S, "content": "hi", "source": "agent_workbench"}, {"source"}),
    ],
    "escalate": [
        (NO_BODY, {"session_name"}),
        ({"reason": "help"}, {"session_name"}),
        ({"session_name": S, "reason": 5}, {"reason"}),
        ({"session_name": S, "reason": ["help"]}, {"reason"}),
        ({"session_name": S, "status": "closed"}, {"status"}),
    ],
    "takeover": [
        (NO_BODY, {"agent_id"}),
        ({"agent_id": None}, {"agent_id"}),
        ({"agent_id": 7}, {"agent_id"}),
        ({"agent_id": HOLDER, "session_name": S}, {"session_name"}),
        ({"agent_id": HOLDER, "force": True}, {"force"}),
    ],
    "release": [
        ({}, {"agent_id"}),
        ({"agent_id": 7}, {"agent_id"}),
        ({"agent_id": HOLDER, "status": "bot_active"}, {"status"}),
    ],
    "close": [
        ({}, {"agent_id"}),
        ({"agent_id": [HOLDER]}, {"agent_id"}),
        ({"agent_id": HOLDER, "reason": "done"}, {"reason"}),
    ],
    "agent_message": [
        ({}, {"agent_id", "content"}),
        ({"agent_id": HOLDER}, {"content"}),
        ({"content": "hi"}, {"agent_id"}),
        ({"agent_id": HOLDER, "content": 123}, {"content"}),
        ({"agent_id": HOLDER, "content": "hi", "role": "bot"}, {"role"}),
    ],
}


@pytest.mark.parametrize("action", SCHEMA_VIOLATIONS)
async def test_schema_violations(client: AppClient, action: str) -> None:
    """Unknown, missing and wrongly typed fields get 400 with `fields` naming each of them."""
    await in_status(client, S, "agent_active")
    async with unchanged(client, S):
        problems = await problems_of(
            client,
            (
                (f"{action} {body!r}", ACTIONS[action].with_body(body), 400, fields)
                for body, fields in SCHEMA_VIOLATIONS[action]
            ),
        )
    assert not problems, "\n".join(problems)


# --- names -------------------------------------------------------------------------------------

# A bad name as it appears in JSON, and (when it can reach a handler) percent-encoded in a path.
BAD_NAMES: dict[str, tuple[str, str | None]] = {
    "colon": ("a:b", "a%3Ab"),
    "star": ("x*", "x%2A"),
    "space": ("a b", "a%20b"),
    "dotdot": ("..", "%2E%2E"),
    "65 chars": ("a" * 65, "a" * 65),
    "empty": ("", None),  # an empty path segment matches no route: covered as JSON only
    "trailing newline": ("abc\n", "abc%0A"),
}


def bad_name_cases(bad: str, encoded: str | None) -> list[tuple[str, Call, int, set[str]]]:
    cases = [
        ("create", create_call(bad), 400, {"session_name"}),
        ("chat", chat_call(bad), 400, {"session_name"}),
        ("escalate", escalate_call(bad), 400, {"session_name"}),
        ("takeover agent_id", action_call("takeover", bad), 400, {"agent_id"}),
        ("release agent_id", action_call("release", bad), 400, {"agent_id"}),
        ("close agent_id", action_call("close", bad), 400, {"agent_id"}),
        ("agent message agent_id", agent_message_call(bad), 400, {"agent_id"}),
    ]
    if encoded is None:
        return cases
    body = {"agent_id": HOLDER}
    for label, method, path, json_body in [
        ("GET state", "GET", f"{CHATBOT}/sessions/{encoded}", NO_BODY),
        ("GET messages", "GET", f"{WORKBENCH}/sessions/{encoded}/messages", NO_BODY),
        ("session stream", "GET", f"{CHATBOT}/sessions/{encoded}/events", NO_BODY),
        ("workbench stream", "GET", f"{WORKBENCH}/sessions/{encoded}/events", NO_BODY),
        ("agent stream", "GET", f"{WORKBENCH}/agents/{encoded}/events", NO_BODY),
        ("takeover path", "POST", f"{WORKBENCH}/sessions/{encoded}/takeover", body),
        ("release path", "POST", f"{WORKBENCH}/sessions/{encoded}/release", body),
        ("close path", "POST", f"{WORKBENCH}/sessions/{encoded}/close", body),
        (
            "agent message path",
            "POST",
            f"{WORKBENCH}/sessions/{encoded}/messages",
            {"agent_id": HOLDER, "content": "hi"},
        ),
    ]:
        cases.append((label, Call(method, path, json_body, encoded=True), 400, set()))
    return cases


def valid_variant(bad: str) -> str:
    """What a lenient server might have made of ``bad``: its safe characters, cut to 64."""
    return re.sub(r"[^A-Za-z0-9_-]", "", bad)[:64]


@pytest.mark.parametrize("case", BAD_NAMES)
async def test_bad_names(client: AppClient, redis: Redis, case: str) -> None:
    """A name outside ^[A-Za-z0-9_-]{1,64}$, in a body or a path, is a 400 and creates nothing:
    no session under a cleaned-up variant of it, no Redis key containing it."""
    bad, encoded = BAD_NAMES[case]
    await in_status(client, S, "agent_active")
    async with unchanged(client, S):
        problems = await problems_of(client, bad_name_cases(bad, encoded))
    assert not problems, "\n".join(problems)
    variant = valid_variant(bad)
    if variant:
        response = await client.get(f"{CHATBOT}/sessions/{variant}")
        await expect_error(response, 404)
    keys = cast(list[str], await redis.keys("*"))  # the suite's client decodes: str names
    leaked = [k for k in keys if (bad and bad in k) or (variant and k.endswith(f":{variant}"))]
    assert not leaked, leaked


# --- sizes -------------------------------------------------------------------------------------


def padded(call: Call, size: int) -> Call:
    """``call``'s JSON body plus a "padding" field, serialised to exactly ``size`` bytes."""
    body = dict(call.body, padding="")
    base = len(json.dumps(body).encode())
    raw = json.dumps(dict(body, padding="x" * (size - base))).encode()
    assert len(raw) == size
    return call.with_raw(raw)


@pytest.mark.parametrize("action", ACTIONS)
async def test_body_size_limit(client: AppClient, action: str) -> None:
    """A body over 65,536 bytes is a JSON 413; one of exactly 65,536 bytes is read (and then
    refused for its unknown padding field, a 400)."""
    await in_status(client, S, "agent_active")
    call = ACTIONS[action]
    async with unchanged(client, S):
        problems = await problems_of(
            client,
            [
                ("65,537 bytes", padded(call, MAX_BODY + 1), 413, None),
                ("256 KiB", padded(call, 4 * MAX_BODY), 413, None),
                ("65,536 bytes", padded(call, MAX_BODY), 400, {"padding"}),
            ],
        )
    assert not problems, "\n".join(problems)


LENGTH_CASES: dict[str, tuple[str, Callable[[str], Call]]] = {
    "chat": ("bot_active", lambda content: chat_call(S, content)),
    "agent_message": ("agent_active", lambda content: agent_message_call(HOLDER, content)),
}


@pytest.mark.parametrize("action", LENGTH_CASES)
async def test_content_length(client: AppClient, action: str) -> None:
    """`content` must be 1 to 4,000 characters (not bytes): empty and 4,001 are 400, exactly
    4,000 (ASCII or CJK) is accepted whole."""
    status, make = LENGTH_CASES[action]
    await in_status(client, S, status)
    async with unchanged(client, S):
        problems = await problems_of(
            client,
            [
                ("empty", make(""), 400, {"content"}),
                ("4,001 ASCII", make("x" * (MAX_CONTENT + 1)), 400, {"content"}),
                ("4,001 CJK", make("人" * (MAX_CONTENT + 1)), 400, {"content"}),
            ],
        )
    assert not problems, "\n".join(problems)
    for content in ("x" * MAX_CONTENT, "人" * MAX_CONTENT):
        body = await ok(client, make(content))
        assert body["message"]["content"] == content


async def test_reason_length(client: AppClient) -> None:
    """`reason` over 500 characters is a 400; exactly 500 is accepted."""
    await in_status(client, S, "bot_active")
    async with unchanged(client, S):
        problems = await problems_of(
            client, [("501", escalate_call(S, "r" * (MAX_REASON + 1)), 400, {"reason"})]
        )
    assert not problems, "\n".join(problems)
    session = await ok(client, escalate_call(S, "r" * MAX_REASON))
    assert session["escalation_reason"] == "r" * MAX_REASON


@pytest.mark.parametrize("action", ["chat", "agent_message"])
async def test_unencodable_content(client: AppClient, action: str) -> None:
    """Text that cannot be written as UTF-8 (a lone surrogate, legal in JSON escapes) is a 400,
    not a 500 with a half-stored message."""
    status, make = LENGTH_CASES[action]
    await in_status(client, S, status)
    call = make("x")
    raw = json.dumps(call.body).replace('"x"', '"bad \\ud800 text"').encode()
    async with unchanged(client, S):
        problems = await problems_of(client, [("lone surrogate", call.with_raw(raw), 400, None)])
    assert not problems, "\n".join(problems)


# --- unknown sessions, routes and methods -------------------------------------------------------

GHOST = "ghost"
UNKNOWN_SESSION_CALLS: list[Call] = [
    Call("GET", f"{CHATBOT}/sessions/{GHOST}"),
    Call("GET", f"{CHATBOT}/sessions/{GHOST}/messages"),
    Call("GET", f"{CHATBOT}/sessions/{GHOST}/events"),
    Call("GET", f"{WORKBENCH}/sessions/{GHOST}"),
    Call("GET", f"{WORKBENCH}/sessions/{GHOST}/messages"),
    Call("GET", f"{WORKBENCH}/sessions/{GHOST}/events"),
    escalate_call(GHOST),
    action_call("takeover", HOLDER, GHOST),
    action_call("release", HOLDER, GHOST),
    action_call("close", HOLDER, GHOST),
    agent_message_call(HOLDER, "hi", GHOST),
]


async def test_unknown_session(client: AppClient, redis: Redis) -> None:
    """Every session endpoint answers 404 for an unknown session, streams included (no stream
    opens), and none of them creates it."""
    await in_status(client, S, "bot_active")
    async with unchanged(client, S):
        problems = await problems_of(
            client, ((f"{call.method} {call.path}", call, 404, None) for call in UNKNOWN_SESSION_CALLS)
        )
    assert not problems, "\n".join(problems)
    await expect_error(await client.get(f"{CHATBOT}/sessions/{GHOST}"), 404)
    assert not [key for key in await redis.keys("*") if GHOST in key]


UNKNOWN_ROUTES: list[Call] = [
    Call("GET", "/nope"),
    Call("GET", "/chatbot"),
    Call("GET", "/chatbot/api/nope"),
    Call("POST", "/chatbot/api/nope", {}),
    Call("GET", f"{CHATBOT}/sessions/{S}/events/more"),
    Call("GET", f"{CHATBOT}/sessions/"),
    Call("POST", f"{WORKBENCH}/sessions/{S}/snooze", {"agent_id": HOLDER}),
    Call("GET", f"{WORKBENCH}/agents/{HOLDER}"),
    Call("GET", "/api/chat"),
]


async def test_unknown_route(client: AppClient) -> None:
    """A path that no route serves is a JSON 404."""
    await in_status(client, S, "bot_active")
    async with unchanged(client, S):
        problems = await problems_of(
            client, ((f"{call.method} {call.path}", call, 404, None) for call in UNKNOWN_ROUTES)
        )
    assert not problems, "\n".join(problems)


WRONG_METHODS: list[tuple[Call, str]] = [
    (Call("PUT", f"{CHATBOT}/chat", {"session_name": S, "content": "hi"}), "POST"),
    (Call("GET", f"{CHATBOT}/chat"), "POST"),
    (Call("DELETE", "/health"), "GET"),
    (Call("POST", "/health", {}), "GET"),
    (Call("DELETE", f"{CHATBOT}/sessions/{S}"), "GET"),
    (Call("PATCH", f"{WORKBENCH}/sessions/{S}/takeover", {"agent_id": HOLDER}), "POST"),
    (Call("POST", f"{WORKBENCH}/sessions", {}), "GET"),
    (Call("POST", f"{CHATBOT}/sessions/{S}/events", {}), "GET"),
    (Call("GET", f"{CHATBOT}/manual/escalate"), "POST"),
]


async def test_wrong_method(client: AppClient) -> None:
    """A known path with a wrong method is a JSON 405 whose Allow header names the right one."""
    await in_status(client, S, "bot_active")
    problems = []
    async with unchanged(client, S):
        for call, allowed in WRONG_METHODS:
            response = await call.send(client)
            try:
                await expect_error(response, 405)
                allow = {m.strip() for m in response.headers.get("Allow", "").split(",")}
                assert allowed in allow, f"Allow: {response.headers.get('Allow')!r}"
            except AssertionError as exc:
                problems.append(f"{call.method} {call.path}: {exc}")
    assert not problems, "\n".join(problems)


# --- forbidden transitions ---------------------------------------------------------------------

# id → (the watched session's status, the refused request); HOLDER holds it when agent_active.
CONFLICTS: dict[str, tuple[str, Call]] = {
    "escalate agent_active": ("agent_active", escalate_call()),
    "escalate closed": ("closed", escalate_call()),
    "takeover held by another": ("agent_active", action_call("takeover", OTHER)),
    "takeover closed": ("closed", action_call("takeover", OTHER)),
    "release by non-holder": ("agent_active", action_call("release", OTHER)),
    "release bot_active": ("bot_active", action_call("release", HOLDER)),
    "release waiting_agent": ("waiting_agent", action_call("release", HOLDER)),
    "release closed": ("closed", action_call("release", HOLDER)),
    "close closed": ("closed", action_call("close", HOLDER)),
    "close by non-holder": ("agent_active", action_call("close", OTHER)),
    "agent message by non-holder": ("agent_active", agent_message_call(OTHER)),
    "agent message bot_active": ("bot_active", agent_message_call(HOLDER)),
    "agent message waiting_agent": ("waiting_agent", agent_message_call(HOLDER)),
    "agent message closed": ("closed", agent_message_call(HOLDER)),
    "customer message closed": ("closed", chat_call()),
    "create existing": ("bot_active", create_call(S)),
    "create existing closed": ("closed", create_call(S)),
}


@pytest.mark.parametrize("case", CONFLICTS)
async def test_forbidden_transition(client: AppClient, case: str) -> None:
    """Each transition docs/api.md forbids, and creating an existing session, is a 409 that changes
    nothing and publishes nothing."""
    status, call = CONFLICTS[case]
    await in_status(client, S, status)
    async with unchanged(client, S):
        await expect_error(await call.send(client), 409)


# --- components and queries --------------------------------------------------------------------

OTHER_SUBAPP_CALLS: dict[str, list[Call]] = {
    "chatbot": [
        Call("GET", f"{WORKBENCH}/sessions"),
        Call("GET", f"{WORKBENCH}/sessions/{S}"),
        Call("GET", f"{WORKBENCH}/sessions/{S}/events"),
        Call("GET", f"{WORKBENCH}/agents/{HOLDER}/events"),
        action_call("takeover"),
    ],
    "workbench": [
        Call("POST", f"{CHATBOT}/sessions", {"session_name": S}),
        chat_call(),
        escalate_call(),
        Call("GET", f"{CHATBOT}/sessions/{S}"),
        Call("GET", f"{CHATBOT}/sessions/{S}/events"),
    ],
}
OWN_CALL: dict[str, Call] = {
    "chatbot": Call("POST", f"{CHATBOT}/sessions", {"session_name": S}),
    "workbench": Call("GET", f"{WORKBENCH}/sessions"),
}


@pytest.mark.parametrize("component", OTHER_SUBAPP_CALLS)
async def test_single_subapp_process(make_client: MakeClient, settings: Settings, component: str) -> None:
    """A process running one sub-app answers JSON 404 for the other's paths, serves its own, and
    /health lists only its own."""
    client = await make_client(settings, components=(component,))
    health = await ok(client, Call("GET", "/health"))
    assert health["components"] == [component]
    problems = await problems_of(
        client, ((f"{call.method} {call.path}", call, 404, None) for call in OTHER_SUBAPP_CALLS[component])
    )
    assert not problems, "\n".join(problems)
    await ok(client, OWN_CALL[component], 201 if component == "chatbot" else 200)


async def test_bad_status_query(client: AppClient) -> None:
    """GET /workbench/api/sessions with a status that does not exist is a 400 naming status."""
    await in_status(client, S, "waiting_agent")
    async with unchanged(client, S):
        problems = await problems_of(
            client,
            (
                (value, Call("GET", f"{WORKBENCH}/sessions?status={value}"), 400, {"status"})
                for value in ("bogus", "", "WAITING_AGENT", "waiting_agent%00")
            ),
        )
    assert not problems, "\n".join(problems)
