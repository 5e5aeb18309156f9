"""Property-based fuzzing (issue 4): request bodies, path parameters, headers and query strings of
every endpoint, drawn by Hypothesis and sent to the real app through aiohttp's TestClient.

Properties checked on every case:

- never a 5xx;
- every 4xx is JSON of the error shape ``{"error": {"code": str, "message": str[, "fields"]}}``,
  and no event stream is opened for it;
- a 4xx changes nothing: every session (all four statuses, so also the waiting queue), every
  transcript, and the broker's newest event id (so nothing was published) are equal before and
  after the request;
- an event stream that opens answers 200 and starts with ``connected``;
- a path name that breaks ``^[A-Za-z0-9_-]{1,64}$`` never gets a 2xx.

How Hypothesis meets asyncio here
---------------------------------
``@given`` cannot wrap an async test, and pytest-asyncio (``asyncio_mode=auto``) owns the loop of
every async test and fixture. So each test is an ordinary async test that builds the app once
with the suite's ``make_client`` fixture (pytest-aiohttp then closes the server, the client and
their sockets; the Redis fixture flushes Redis), and runs a ``@given``-decorated *inner* function
in a worker thread (``asyncio.to_thread``). Each example is handed back to the test's own loop with
``asyncio.run_coroutine_threadsafe`` and waited for with a deadline. The loop stays free while
Hypothesis generates, there is no second loop to leak, no coroutine is left un-awaited, and an
assertion that fails on the loop travels back through the future into Hypothesis, which shrinks
and reports the example as usual. An app per example (``asyncio.run`` each time) would be tens of
times slower, and a sync test with a loop of its own would have to re-do what pytest-aiohttp
already does for setup and teardown.

Because the app keeps its state between examples, examples name sessions by *kind*
(``Ref("waiting")`` ...) and the harness keeps one live session of each kind, seeding a new one
as soon as a successful request moves it (a fuzzed takeover that happened to be valid, a chat
that asked for a human). Hypothesis' example database is off and its storage directory is a
temporary one, so a run leaves nothing in the repository. Each test logs (INFO) how many cases it
ran, "N cases for target X", and the module logs the totals at the end.
"""

import asyncio
import base64
import concurrent.futures
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from yarl import URL

from app.domain.store.base import MAX_PAGE
from app.keys import BACKENDS
from app.process.settings import Settings
from schemas import is_valid_name
from tests.support.api import CHATBOT, STATUSES, WORKBENCH
from tests.support.app_server import AppClient, MakeClient
from tests.support.sse import SSEEvent, SSEStream

logger = logging.getLogger(__name__)

T = TypeVar("T")

SECRET = "fuzz-secret-" + "s" * 40
OTHER_SECRET = "fuzz-other-" + "o" * 40
HOLDER = "agent-1"  # holds the "held" session
OTHER = "agent-2"
# One live session of each kind is kept; examples refer to them by kind.
KINDS = ("bot", "waiting", "held", "closed")
EXPECTED = {
    "bot": ("bot_active", None),
    "waiting": ("waiting_agent", None),
    "held": ("agent_active", HOLDER),
    "closed": ("closed", None),
}
MISSING = "fz-missing"  # a valid name no session ever has
FIELDS = ("session_name", "content", "reason", "agent_id", "status", "token", "type", "source")

# Bounds: one request, one whole case (request, snapshots, re-seeding).
REQUEST_DEADLINE = 5.0
CASE_DEADLINE = 20.0

# Examples per target (the module should stay well under ~90 s).
BODY_EXAMPLES = 500  # per POST endpoint, 7 endpoints
PATH_EXAMPLES = 1500
HEADER_EXAMPLES = 1500
QUERY_EXAMPLES = 1000
REDIS_BODY_EXAMPLES = 200
REDIS_RESUME_EXAMPLES = 150
# The fast tier (make test-fast sets SWITCHBOARD_FUZZ_TIER=fast) runs a tenth of each number
# above; the whole suite (make test, CI) runs them all.
FAST_TIER_SHARE = 10

POST_ENDPOINTS = (
    f"{CHATBOT}/sessions",
    f"{CHATBOT}/chat",
    f"{CHATBOT}/manual/escalate",
    f"{WORKBENCH}/sessions/{{s}}/takeover",
    f"{WORKBENCH}/sessions/{{s}}/release",
    f"{WORKBENCH}/sessions/{{s}}/close",
    f"{WORKBENCH}/sessions/{{s}}/messages",
)
# Every route with a path parameter ({s}: session_name, {a}: agent_id).
PATH_ROUTES = (
    ("GET", f"{CHATBOT}/sessions/{{s}}"),
    ("GET", f"{CHATBOT}/sessions/{{s}}/messages"),
    ("GET", f"{CHATBOT}/sessions/{{s}}/events"),
    ("GET", f"{WORKBENCH}/sessions/{{s}}"),
    ("GET", f"{WORKBENCH}/sessions/{{s}}/messages"),
    ("GET", f"{WORKBENCH}/sessions/{{s}}/events"),
    ("POST", f"{WORKBENCH}/sessions/{{s}}/takeover"),
    ("POST", f"{WORKBENCH}/sessions/{{s}}/release"),
    ("POST", f"{WORKBENCH}/sessions/{{s}}/close"),
    ("POST", f"{WORKBENCH}/sessions/{{s}}/messages"),
    ("GET", f"{WORKBENCH}/agents/{{a}}/events"),
)
STREAM_ROUTES = (
    f"{CHATBOT}/sessions/{{s}}/events",
    f"{WORKBENCH}/sessions/{{s}}/events",
    f"{WORKBENCH}/agents/{{a}}/events",
)
ALL_ROUTES = (
    ("POST", f"{CHATBOT}/sessions"),
    ("POST", f"{CHATBOT}/chat"),
    ("POST", f"{CHATBOT}/manual/escalate"),
    ("GET", f"{WORKBENCH}/sessions"),
    *PATH_ROUTES,
)


# --- what an example holds: references resolved when the case runs ------------------------------


@dataclass(frozen=True)
class Ref:
    """The live session of a kind (``bot``, ``waiting``, ``held``, ``closed``)."""

    kind: str


@dataclass(frozen=True)
class Token:
    """A token made when the case runs. ``flavor``: ``valid`` (signed with the app's secret),
    ``expired``, ``foreign`` (another secret), ``unsigned`` (alg none), ``tampered`` (claims
    swapped under a valid signature), ``odd_claims`` (signed, claims of the wrong types)."""

    kind: str
    subject: "str | Ref"
    flavor: str


@dataclass(frozen=True)
class Position:
    """The broker's newest event id with ``delta`` added to its milliseconds."""

    delta: int


@dataclass(frozen=True)
class Joined:
    """Parts (text or references) joined into one string."""

    parts: tuple[Any, ...]


@dataclass(frozen=True)
class JsonBody:
    """``value`` as JSON text, encoded with ``encoding`` (lone surrogates pass through)."""

    value: Any
    ensure_ascii: bool = True
    encoding: str = "utf-8"


@dataclass(frozen=True)
class RawBody:
    data: bytes


Body = JsonBody | RawBody | None


@dataclass(frozen=True)
class Request:
    """One request as drawn: path template and its values, body, headers, query."""

    method: str
    template: str
    path_values: tuple[tuple[str, Any], ...] = ()
    body: Body = None
    # None: no Content-Type header at all (the client's automatic one is suppressed too).
    content_type: Any = None
    headers: tuple[tuple[str, Any], ...] = ()
    params: tuple[tuple[str, Any], ...] = ()


@dataclass
class Outcome:
    status: int
    content_type: str
    body: Any
    first_event: SSEEvent | None


@dataclass
class State:
    """Everything a request could change: sessions, transcripts, the newest event id."""

    sessions: dict[str, dict[str, Any]]
    transcripts: dict[str, list[dict[str, Any]]]
    position: str

    def diff(self, after: "State") -> list[str]:
        changes = []
        for name in sorted(set(self.sessions) | set(after.sessions)):
            if self.sessions.get(name) != after.sessions.get(name):
                changes.append(f"session {name!r}: {self.sessions.get(name)} -> {after.sessions.get(name)}")
            if self.transcripts.get(name) != after.transcripts.get(name):
                changes.append(f"transcript of {name!r} changed")
        if self.position != after.position:
            changes.append(f"an event was published ({self.position} -> {after.position})")
        return changes


# --- the harness ---------------------------------------------------------------------------------


class Harness:
    """The app under test, on the test's loop, driven from Hypothesis' worker thread."""

    def __init__(self, client: AppClient, totals: Counter[str], *, secure: bool) -> None:
        self.client = client
        self.totals = totals
        self.secure = secure
        self.loop = asyncio.get_running_loop()
        self.world: dict[str, str] = {}
        self.statuses: Counter[int] = Counter()
        self.streams = 0  # streams that opened (and started with ``connected``)
        self._serial = 0

    # running examples

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the test's loop (called from the worker thread), bounded."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=CASE_DEADLINE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise AssertionError(f"a case did not finish within {CASE_DEADLINE} s") from None

    async def fuzz(
        self,
        target: str,
        strategy: st.SearchStrategy[T],
        examples: int,
        run_case: Callable[[T], Coroutine[Any, Any, object]],
        *,
        group: str | None = None,
    ) -> int:
        """Run ``run_case`` on ``examples`` examples of ``strategy`` (more while Hypothesis
        shrinks a failure); the number of cases run, also added to the module's totals under
        ``group`` (default: ``target``)."""
        count = 0
        if os.environ.get("SWITCHBOARD_FUZZ_TIER") == "fast":
            examples = max(1, examples // FAST_TIER_SHARE)

        @fuzz_settings(
            max_examples=examples,
            deadline=None,
            database=None,
            print_blob=True,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.filter_too_much,
                HealthCheck.large_base_example,
            ],
        )
        @given(strategy)
        def prop(case: T) -> None:
            nonlocal count
            count += 1
            self.run(run_case(case))

        self.statuses.clear()
        self.streams = 0
        try:
            await asyncio.to_thread(prop)
        finally:
            self.totals[group or target] += count
            logger.info(
                "%d cases for target %s (statuses %s; %d streams opened)",
                count,
                target,
                dict(sorted(self.statuses.items())),
                self.streams,
            )
        return count

    # the world: one live session per kind

    async def seed_world(self) -> None:
        for kind in KINDS:
            self.world[kind] = await self._seed(kind)

    async def keep_world(self) -> None:
        """Re-seed every kind whose session a successful request moved."""
        store = self.client.app[BACKENDS].store
        for kind, name in list(self.world.items()):
            session = await store.get(name)
            if (session["status"], session["agent_id"]) != EXPECTED[kind]:
                self.world[kind] = await self._seed(kind)

    async def _seed(self, kind: str) -> str:
        self._serial += 1
        name = f"fz-{kind}-{self._serial}"
        await self._must("POST", f"{CHATBOT}/sessions", {"session_name": name}, 201)
        customer = self.auth("session", name)
        await self._must("POST", f"{CHATBOT}/chat", {"session_name": name, "content": "hello"}, 200, customer)
        agent = self.auth("agent", HOLDER)
        if kind == "waiting":
            body = {"session_name": name, "reason": "fuzz"}
            await self._must("POST", f"{CHATBOT}/manual/escalate", body, 200, customer)
        elif kind in ("held", "closed"):
            action = "takeover" if kind == "held" else "close"
            await self._must(
                "POST", f"{WORKBENCH}/sessions/{name}/{action}", {"agent_id": HOLDER}, 200, agent
            )
        return name

    async def _must(
        self, method: str, path: str, body: Any, status: int, headers: dict[str, str] | None = None
    ) -> None:
        async with asyncio.timeout(REQUEST_DEADLINE):
            async with self.client.request(method, path, json=body, headers=headers) as response:
                assert response.status == status, (method, path, response.status, await response.text())

    def auth(self, kind: str, subject: str) -> dict[str, str]:
        if not self.secure:
            return {}
        return {"Authorization": f"Bearer {make_token(kind, subject, 'valid')}"}

    # resolving what an example refers to

    async def resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return self.world[value.kind]
        if isinstance(value, Token):
            return make_token(value.kind, await self.resolve(value.subject), value.flavor)
        if isinstance(value, Position):
            ms, _, seq = (await self.client.app[BACKENDS].broker.position()).partition("-")
            return f"{max(0, int(ms) + value.delta)}-{seq}"
        if isinstance(value, Joined):
            return "".join([await self.resolve(part) for part in value.parts])
        if isinstance(value, list):
            return [await self.resolve(item) for item in value]
        if isinstance(value, dict):
            return {key: await self.resolve(item) for key, item in value.items()}
        return value

    async def encode(self, body: Body) -> bytes | None:
        if body is None:
            return None
        if isinstance(body, RawBody):
            return body.data
        text = json.dumps(await self.resolve(body.value), ensure_ascii=body.ensure_ascii)
        errors = "surrogatepass" if body.encoding.startswith("utf") else "backslashreplace"
        return text.encode(body.encoding, errors)

    # one case

    async def snapshot(self) -> State:
        backends = self.client.app[BACKENDS]
        sessions: dict[str, dict[str, Any]] = {}
        for status in STATUSES:
            for session in (await backends.store.list_sessions(status, limit=1000)).items:
                sessions[session["session_name"]] = dict(session)
        transcripts = {
            name: [dict(m) for m in (await backends.store.messages(name, limit=1000)).items]
            for name in sessions
        }
        return State(sessions, transcripts, await backends.broker.position())

    async def case(self, request: Request) -> tuple[Outcome, str]:
        """Send ``request`` and check every property; the outcome and the name(s) in its path."""
        values = {key: await self.resolve(value) for key, value in request.path_values}
        # quote(safe="") leaves "." alone; escaping it too keeps "." and ".." as names instead
        # of letting the client fold them away as dot segments.
        path = request.template.format(
            **{key: quote(str(value), safe="").replace(".", "%2E") for key, value in values.items()}
        )
        data = await self.encode(request.body)
        headers = {}
        for key, value in request.headers:
            resolved = await self.resolve(value)
            if resolved is not None:
                headers[key] = resolved
        content_type = await self.resolve(request.content_type)
        if content_type is not None:
            headers["Content-Type"] = content_type
        params = [(key, await self.resolve(value)) for key, value in request.params]
        what = (
            f"{request.method} {path} params={params!r} headers={headers!r} "
            f"body={data[:300] if data is not None else None!r}"
        )

        before = await self.snapshot()
        outcome = await self.send(request.method, path, data, headers, params)
        after = await self.snapshot()
        changes = before.diff(after)
        self.statuses[outcome.status] += 1

        assert outcome.status < 500, f"{what} -> {outcome.status} {outcome.body}"
        if outcome.status >= 400:
            assert outcome.content_type == "application/json", (
                f"{what} -> {outcome.status} {outcome.content_type}"
            )
            assert_error_shape(outcome.body, what)
            assert not changes, f"{what} -> {outcome.status} {outcome.body} yet: {changes}"
        if outcome.content_type == "text/event-stream":
            assert outcome.status == 200, what
            assert outcome.first_event is not None and outcome.first_event.type == "connected", (
                f"{what}: stream opened with {outcome.first_event}"
            )
            self.streams += 1
        elif outcome.status < 400:
            assert outcome.content_type == "application/json", (
                f"{what} -> {outcome.status} {outcome.content_type}"
            )
            await self.keep_world()
        return outcome, ",".join(str(v) for v in values.values())

    async def send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        params: list[tuple[str, str]],
    ) -> Outcome:
        """One exchange; a stream is read up to its first event, then closed."""
        async with asyncio.timeout(REQUEST_DEADLINE):
            async with self.client.request(
                method,
                URL(path, encoded=True),
                data=data,
                headers=headers,
                params=params or None,
                skip_auto_headers=("Content-Type",),
                timeout=aiohttp.ClientTimeout(total=None),
            ) as response:
                content_type = response.content_type
                if content_type == "text/event-stream":
                    try:
                        first = await SSEStream(response).next(timeout=REQUEST_DEADLINE)
                    finally:
                        response.close()
                    return Outcome(response.status, content_type, None, first)
                raw = await response.read()
                body: Any = raw
                if content_type == "application/json":
                    body = json.loads(raw)
                return Outcome(response.status, content_type, body, None)


def assert_error_shape(body: Any, what: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"{what}: {body!r}"
    assert isinstance(error.get("code"), str) and error["code"], f"{what}: {body!r}"
    assert isinstance(error.get("message"), str), f"{what}: {body!r}"
    assert set(error) <= {"code", "message", "fields", "request_id"}, f"{what}: {body!r}"
    if "fields" in error:
        assert isinstance(error["fields"], dict), f"{what}: {body!r}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(kind: str, subject: Any, flavor: str) -> str:
    now = int(time.time())
    claims = {"typ": kind, "sub": subject, "iat": now, "exp": now + 600}
    if flavor == "valid":
        return jwt.encode(claims, SECRET, algorithm="HS256")
    if flavor == "expired":
        return jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, SECRET, algorithm="HS256")
    if flavor == "foreign":
        return jwt.encode(claims, OTHER_SECRET, algorithm="HS256")
    if flavor == "unsigned":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(claims).encode())}."
    if flavor == "tampered":
        header, _, signature = jwt.encode(claims, SECRET, algorithm="HS256").split(".")
        forged = _b64(json.dumps({**claims, "typ": "agent", "sub": OTHER}).encode())
        return f"{header}.{forged}.{signature}"
    if flavor == "odd_claims":
        odd = {"typ": [kind], "sub": {"name": subject}, "iat": "now", "exp": now + 600}
        return jwt.encode(odd, SECRET, algorithm="HS256")
    raise ValueError(flavor)


# --- strategies ----------------------------------------------------------------------------------


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``choices`` in proportion to its weight (``one_of`` merges repeated branches, so
    repeating one gives it no extra weight)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(lambda i: pool[i])


text = st.text(max_size=40)  # Hypothesis' text has no surrogates by default
header_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=60)
valid_names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
name_part = st.from_regex(r"[A-Za-z0-9_-]{0,10}", fullmatch=True)
near_names = st.builds(
    lambda head, bad, tail: head + bad + tail,
    name_part,
    st.sampled_from(
        [
            "*",
            "?",
            "[",
            "]",
            ":",
            "\n",
            "\r\n",
            "..",
            ".",
            "/",
            "\\",
            "%",
            "%2F",
            " ",
            "\x00",
            "\t",
            "é",
            "名",
            "\u2028",
            "\ufeff",
            "{",
            "}",
            "$",
            "'",
            '"',
            "sse:broadcast",
        ]
    ),
    name_part,
)
fixed_names = st.sampled_from([HOLDER, OTHER, MISSING, "", "a" * 64, "a" * 65, "abc\n", "-", "_", "0"])
refs = st.builds(Ref, st.sampled_from(KINDS))
name_values = st.one_of(refs, fixed_names, valid_names, near_names, text)
lone_surrogates = st.builds(
    lambda head, surrogate: head + surrogate,
    st.text(max_size=5),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
)
sized_text = st.sampled_from([0, 1, 2, 499, 500, 501, 3999, 4000, 4001, 10_000]).map(lambda n: "c" * n)
content_values = st.one_of(
    text,
    sized_text,
    lone_surrogates,
    st.sampled_from(["hello", "I want a human", "is it?", "你好", "转人工", "\x00", " "]),
)
json_keys = st.one_of(st.sampled_from(FIELDS), text)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=10,
)
field_objects = st.fixed_dictionaries(
    {},
    optional={
        "session_name": st.one_of(name_values, json_values),
        "content": st.one_of(content_values, json_values),
        "reason": st.one_of(content_values, st.none(), json_values),
        "agent_id": st.one_of(name_values, json_values),
    },
)
field_objects_with_extras = st.builds(
    lambda fields, extras: {**extras, **fields},
    field_objects,
    st.dictionaries(json_keys, json_values, min_size=1, max_size=3),
)
json_bodies = st.builds(
    JsonBody,
    weighted((2, field_objects), (1, field_objects_with_extras), (1, json_values)),
    st.booleans(),
    st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32", "utf-8-sig", "latin-1"]),
)
SPECIAL_BODIES = (
    b"[" * 30_000 + b"]" * 30_000,  # too deep for the JSON parser
    b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    b"[" * 70_000,  # over the body limit
    b" " * 70_000,
    json.dumps({"session_name": "big", "content": "c" * 70_000}).encode(),
    b'{"session_name": 1' + b"9" * 5_000 + b"}",  # past Python's int digit limit
    b'{"session_name": "x", "content": 1e999999}',
    b'{"session_name": NaN, "content": Infinity}',
    b'{"session_name": "a", "session_name": "b", "content": "dup"}',
    b'{"content": "\\ud800", "session_name": "s"}',
    b'{"content": "\\udfff\\ud800", "session_name": "s", "reason": "\\ud83d"}',
    b'{"session_name": "s", "content": "\xed\xa0\x80"}',  # a surrogate as raw UTF-8 bytes
    b'{"session_name": "s", "content": "\xff\xfe"}',
    b"\xef\xbb\xbf{}",
    b"{}",
    b"[]",
    b"null",
    b'""',
    b"0",
    b"{",
    b"}",
    b"\x00",
    b"{}\x00",
)
raw_bodies = st.one_of(
    st.binary(max_size=300).map(RawBody),
    st.sampled_from(SPECIAL_BODIES).map(RawBody),
    st.sampled_from([b"", b" ", b"\r\n\t "]).map(RawBody),
)
bodies = weighted((3, json_bodies), (1, raw_bodies), (1, st.none()))
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json",
        "application/json",
        "text/plain",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-patch+json",
        "*/*",
        "",
    ]
)

# Well-formed ids (as is_event_id sees them: 1-20 digits each) around the 64-bit limits of
# Redis stream ids.
wide_ids = st.builds(
    lambda ms, seq: f"{ms}-{seq}",
    st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**64]), st.integers(0, 10**20 - 1)),
    st.one_of(st.sampled_from([0, 2**63, 2**64 - 1, 2**64, 10**20 - 1]), st.integers(0, 10**20 - 1)),
)
event_ids = st.one_of(
    st.builds(Position, st.sampled_from([-86_400_000, -1000, -1, 0, 1, 1000, 86_400_000])),
    st.sampled_from(
        [
            "0-0",
            "0-1",
            "1-0",
            "-1",
            "1-",
            "-",
            "0x1-0",
            "1-0-0",
            "٣-٣",
            "１-０",
            " 1-0 ",
            "99999999999999999999-0",
            "0-99999999999999999999",
            "1-18446744073709551615",
            "1-18446744073709551616",
            "18446744073709551616-0",
            "1e3-0",
            "+1-0",
        ]
    ),
    st.from_regex(r"[0-9]{1,22}-[0-9]{1,22}", fullmatch=True),
    wide_ids,
    header_text,
)
token_subjects = st.one_of(refs, st.sampled_from([HOLDER, OTHER]), valid_names, near_names)
tokens = st.builds(
    Token,
    st.sampled_from(["session", "agent", "agent", "session", "admin", ""]),
    token_subjects,
    st.sampled_from(["valid", "valid", "valid", "expired", "foreign", "unsigned", "tampered", "odd_claims"]),
)
authorizations = weighted(
    (1, st.none()),
    (2, st.builds(lambda token: Joined(("Bearer ", token)), tokens)),
    (
        1,
        st.builds(
            lambda scheme, sep, token: Joined((scheme, sep, token)),
            st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", ""]),
            st.sampled_from([" ", "  ", "\t", ""]),
            st.one_of(tokens, header_text),
        ),
    ),
    (1, st.builds(lambda garbage: Joined(("Bearer ", garbage)), header_text)),
    (1, header_text),
)


@dataclass(frozen=True)
class Shape:
    """A well-formed request for a route: path values, JSON body (None for GET) and the token
    that would authorize it on a secure app."""

    path_values: tuple[tuple[str, Any], ...]
    body: dict[str, Any] | None
    token: Token


@st.composite
def well_formed(draw: st.DrawFn, method: str, template: str) -> Shape:
    """A request for ``template`` that a client of the API could send: about a live session
    (now and then a missing one), by the holding agent (now and then another one, or with the
    agent left to the token)."""
    sessions: list[str | Ref] = [*(Ref(kind) for kind in KINDS), MISSING]
    session = draw(st.sampled_from(sessions))
    agent = draw(st.sampled_from([HOLDER, HOLDER, OTHER]))
    chatbot = template.startswith(CHATBOT)
    token = Token("session", session, "valid") if chatbot else Token("agent", agent, "valid")
    path: tuple[tuple[str, Any], ...] = ()
    if "{s}" in template:
        path = (("s", session),)
    elif "{a}" in template:
        path = (("a", agent),)
    body: dict[str, Any] | None = None
    agent_field = draw(st.fixed_dictionaries({}, optional={"agent_id": st.just(agent)}))
    if method == "GET":
        pass
    elif template.endswith("/sessions"):
        body = draw(st.fixed_dictionaries({}, optional={"session_name": st.one_of(valid_names, refs)}))
    elif template.endswith("/chat"):
        session = draw(st.one_of(st.just(session), valid_names))
        content = draw(st.sampled_from(["hello", "is it?", "a human please", "ok"]))
        body = {"session_name": session, "content": content}
        token = Token("session", session, "valid")
    elif template.endswith("/escalate"):
        body = {"session_name": session, **draw(st.fixed_dictionaries({}, optional={"reason": text}))}
    elif template.endswith("/messages"):
        body = {**agent_field, "content": "hi"}
    else:
        body = agent_field
    return Shape(path, body, token)


@st.composite
def mutated_bodies(draw: st.DrawFn, template: str) -> tuple[tuple[tuple[str, Any], ...], JsonBody]:
    """A well-formed body for ``template`` with one to three fields set to fuzzed values,
    dropped, or added."""
    shape = draw(well_formed("POST", template))
    value = dict(shape.body or {})
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(["set", "set", "set", "drop", "add"]))
        if operation == "drop" and value:
            del value[draw(st.sampled_from(sorted(value)))]
        elif operation == "add":
            value[draw(json_keys)] = draw(json_values)
        else:
            key = draw(st.sampled_from(sorted(value) or ["session_name"]))
            fuzzed = {
                "session_name": name_values,
                "agent_id": name_values,
                "content": content_values,
                "reason": content_values,
            }.get(key, json_values)
            value[key] = draw(weighted((2, fuzzed), (1, json_values)))
    return shape.path_values, JsonBody(value, draw(st.booleans()))


def path_values(
    template: str, value: st.SearchStrategy[Any]
) -> st.SearchStrategy[tuple[tuple[str, Any], ...]]:
    if "{s}" in template:
        return st.tuples(st.tuples(st.just("s"), value))
    if "{a}" in template:
        return st.tuples(st.tuples(st.just("a"), value))
    return st.just(())


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis' storage (its unicode tables) in a temporary directory, not in the repo."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def totals() -> Iterator[Counter[str]]:
    """Cases run per target over the module, logged at the end."""
    counts: Counter[str] = Counter()
    yield counts
    for target, count in sorted(counts.items()):
        logger.info("%d cases for target %s (module total)", count, target)
    logger.info("%d cases in total", sum(counts.values()))


async def harness(
    make_client: MakeClient, settings: Settings, totals: Counter[str], *, secure: bool = False
) -> Harness:
    """The real app (memory or Redis, insecure or with tokens), seeded with one session of
    each kind. Limits that would only add 429s are lifted: the per-address one (every case
    comes from 127.0.0.1), and the per-token ones on the secure app."""
    if secure:
        client = await make_client(
            settings,
            insecure=False,
            secret=SECRET,
            rate_limit=1e6,
            rate_burst=1_000_000,
            max_streams_per_token=1_000_000,
            start_rate=1_000_000,
        )
    else:
        client = await make_client(settings, start_rate=1_000_000)
    fuzz = Harness(client, totals, secure=secure)
    await fuzz.seed_world()
    return fuzz


def memory_settings() -> Settings:
    return Settings(port=0, use_redis=False, insecure=True)


# --- 1. bodies -----------------------------------------------------------------------------------


@st.composite
def body_requests(draw: st.DrawFn, templates: tuple[str, ...]) -> Request:
    """Half the time a well-formed body with fields fuzzed (sent as JSON, mostly), half the time
    any body at all under any content type."""
    template = draw(st.sampled_from(templates))
    if draw(st.booleans()):
        where, body = draw(mutated_bodies(template))
        content_type = draw(weighted((2, st.just("application/json")), (1, content_types)))
        return Request("POST", template, where, body, content_type)
    where = draw(st.one_of(refs, st.just(MISSING)).map(lambda ref: (("s", ref),)))
    return Request("POST", template, where, draw(bodies), draw(content_types))


@pytest.mark.parametrize("endpoint", POST_ENDPOINTS)
async def test_post_bodies_never_5xx_and_errors_change_nothing(
    make_client: MakeClient, totals: Counter[str], endpoint: str
) -> None:
    """Arbitrary JSON (field names of the API mixed with random ones; names, contents and
    reasons at and past their limits; lone surrogates), arbitrary bytes, oversized and too-deep
    bodies, under several content types, POSTed to every action (memory backend): never a 5xx,
    every 4xx in the JSON error shape, and a 4xx changes no session, transcript or queue and
    publishes nothing."""
    fuzz = await harness(make_client, memory_settings(), totals)
    await fuzz.fuzz(
        f"bodies {endpoint}", body_requests((endpoint,)), BODY_EXAMPLES, fuzz.case, group="bodies"
    )


async def test_post_bodies_on_redis(make_client: MakeClient, totals: Counter[str], redis_url: str) -> None:
    """The body fuzzing of every POST endpoint again on the Redis backend (fewer examples):
    Redis keys and channels are built only from validated names, so no input reaches Redis in a
    form that fails there as a 5xx."""
    fuzz = await harness(make_client, Settings(port=0, redis_url=redis_url, insecure=True), totals)
    await fuzz.fuzz("bodies (redis)", body_requests(POST_ENDPOINTS), REDIS_BODY_EXAMPLES, fuzz.case)


# --- 2. path parameters --------------------------------------------------------------------------

path_texts = st.one_of(
    refs,
    fixed_names,
    valid_names,
    near_names,
    st.text(max_size=80),
    st.text(st.characters(codec="ascii"), max_size=20),
    st.sampled_from([".", "..", "...", "%", "%2F", "%00", "a/b", "?", "#", "a b", "+", "~", "@"]),
)


@st.composite
def path_requests(draw: st.DrawFn) -> Request:
    method, template = draw(st.sampled_from(PATH_ROUTES))
    shape = draw(well_formed(method, template))
    body = JsonBody(shape.body) if shape.body is not None else None
    return Request(
        method,
        template,
        draw(path_values(template, path_texts)),
        body,
        "application/json" if body is not None else None,
    )


async def check_path(fuzz: Harness, request: Request) -> None:
    outcome, name = await fuzz.case(request)
    if outcome.status < 300:
        assert is_valid_name(name), f"{request.method} {request.template} with {name!r} -> {outcome.status}"


async def test_path_parameters_never_5xx(make_client: MakeClient, totals: Counter[str]) -> None:
    """Arbitrary text, percent-encoded, as session_name and agent_id on every route with a path
    parameter (reads, actions, the three streams): never a 5xx, a 4xx changes nothing, and a
    name outside ^[A-Za-z0-9_-]{1,64}$ never succeeds."""
    fuzz = await harness(make_client, memory_settings(), totals)
    await fuzz.fuzz("path parameters", path_requests(), PATH_EXAMPLES, lambda r: check_path(fuzz, r))


# --- 3. headers (secure app) ---------------------------------------------------------------------

header_content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            'application/json; charset="',
            "application/json;;;",
            "; charset=utf-8",
            "application/json; charset=utf-8; charset=latin-1",
            "/",
            "a/b/c",
            "=",
            "application/json; q",
            'application/json; x="\\',
        ]
    ),
    header_text,
)


@st.composite
def header_requests(draw: st.DrawFn) -> Request:
    method, template = draw(st.sampled_from(ALL_ROUTES))
    shape = draw(well_formed(method, template))
    body = JsonBody(shape.body) if shape.body is not None else None
    # Half the time the token that authorizes the request, so the other headers get past
    # authentication and reach the handlers.
    authorization = draw(st.one_of(st.just(Joined(("Bearer ", shape.token))), authorizations))
    headers = (
        ("Authorization", authorization),
        ("Last-Event-ID", draw(st.one_of(st.none(), event_ids))),
        ("X-Request-ID", draw(st.one_of(st.none(), header_text))),
    )
    content_type = draw(st.one_of(st.just("application/json"), header_content_types))
    return Request(method, template, shape.path_values, body, content_type, headers)


async def test_headers_on_secure_app_never_5xx(make_client: MakeClient, totals: Counter[str]) -> None:
    """Arbitrary Authorization (valid, expired, foreign, unsigned, tampered and odd-claims
    tokens of every kind and subject, other schemes, garbage), Content-Type, Last-Event-ID and
    X-Request-ID on every endpoint of a secure app: never a 5xx, a 4xx changes nothing, and
    every stream that opens starts with ``connected``."""
    fuzz = await harness(make_client, memory_settings(), totals, secure=True)
    await fuzz.fuzz("headers", header_requests(), HEADER_EXAMPLES, fuzz.case)


# --- 4. query strings (secure app) ---------------------------------------------------------------

query_texts = st.one_of(text, st.text(st.characters(codec="ascii"), max_size=20))
statuses = st.one_of(
    st.sampled_from([*STATUSES, "", "WAITING_AGENT", "waiting_agent ", "closed\n", "bot_active\x00"]),
    query_texts,
)
extra_params = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["status", "token", "last_event_id", "x"]), query_texts), query_texts
    ),
    max_size=2,
)


# A page of a listing: limits and cursors, well-formed or not.
limits = st.one_of(
    st.integers(-2, MAX_PAGE + 2).map(str), st.sampled_from(["1.5", " 5", "+5", "1e3", "١٠", ""]), query_texts
)
cursors = st.one_of(
    st.sampled_from(["0", "c0ffee1234abcd56", "9" * 25]),
    st.text("0123456789abcdef", min_size=1, max_size=40),
    query_texts,
)
TRANSCRIPT_ROUTES = (f"{CHATBOT}/sessions/{{s}}/messages", f"{WORKBENCH}/sessions/{{s}}/messages")


@st.composite
def page_params(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """``limit`` and ``cursor``, each there half the time."""
    params: list[tuple[str, Any]] = []
    if draw(st.booleans()):
        params.append(("limit", draw(limits)))
    if draw(st.booleans()):
        params.append(("cursor", draw(cursors)))
    return params


@st.composite
def query_requests(draw: st.DrawFn) -> Request:
    kind = draw(st.sampled_from(["queue", "transcript", "stream"]))
    if kind == "queue":
        auth = draw(st.sampled_from([Joined(("Bearer ", Token("agent", HOLDER, "valid"))), None]))
        query = (("status", draw(statuses)), *draw(page_params()), *draw(extra_params))
        return Request(
            "GET", f"{WORKBENCH}/sessions", headers=(("Authorization", auth),), params=tuple(query)
        )
    if kind == "transcript":
        template = draw(st.sampled_from(TRANSCRIPT_ROUTES))
        shape = draw(well_formed("GET", template))
        auth = draw(st.sampled_from([Joined(("Bearer ", shape.token)), None]))
        query = (*draw(page_params()), *draw(extra_params))
        return Request(
            "GET", template, shape.path_values, headers=(("Authorization", auth),), params=tuple(query)
        )
    template = draw(st.sampled_from(STREAM_ROUTES))
    shape = draw(well_formed("GET", template))
    params: list[tuple[str, Any]] = []
    if draw(st.booleans()):
        params.append(("last_event_id", draw(st.one_of(event_ids, query_texts))))
    if draw(st.integers(0, 3)):
        # Half the time the token that opens this stream.
        params.append(("token", draw(weighted((2, st.just(shape.token)), (1, tokens), (1, query_texts)))))
    params.extend(draw(extra_params))
    auth = draw(weighted((3, st.none()), (1, authorizations)))
    return Request(
        "GET", template, shape.path_values, headers=(("Authorization", auth),), params=tuple(params)
    )


async def test_query_strings_on_secure_app_never_5xx(make_client: MakeClient, totals: Counter[str]) -> None:
    """Arbitrary ``status=``, ``limit=`` and ``cursor=`` on the queue listing (the last two on
    the transcripts too), arbitrary ``last_event_id=`` and ``token=`` on the three streams (plus stray and repeated parameters), on a secure app: never a 5xx, a 4xx
    changes nothing, and a stream that opens starts with ``connected``."""
    fuzz = await harness(make_client, memory_settings(), totals, secure=True)
    await fuzz.fuzz("query strings", query_requests(), QUERY_EXAMPLES, fuzz.case)


@st.composite
def resume_requests(draw: st.DrawFn) -> Request:
    template = draw(st.sampled_from(STREAM_ROUTES))
    value = st.one_of(refs, st.sampled_from([HOLDER, OTHER]))
    position = draw(st.one_of(event_ids, wide_ids))
    if draw(st.booleans()):
        return Request(
            "GET", template, draw(path_values(template, value)), headers=(("Last-Event-ID", position),)
        )
    return Request("GET", template, draw(path_values(template, value)), params=(("last_event_id", position),))


async def test_resume_positions_on_redis(
    make_client: MakeClient, totals: Counter[str], redis_url: str
) -> None:
    """Arbitrary resume positions (Last-Event-ID header and ``?last_event_id=``) on the streams
    of the Redis backend, where a position that looks like an id is read back from Redis
    Streams: never a 5xx, and every stream that opens starts with ``connected``."""
    fuzz = await harness(make_client, Settings(port=0, redis_url=redis_url, insecure=True), totals)
    await fuzz.fuzz("resume positions (redis)", resume_requests(), REDIS_RESUME_EXAMPLES, fuzz.case)


@pytest.mark.parametrize(
    "position", ["0-18446744073709551615", "0-18446744073709551616", "1-99999999999999999999"]
)
@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_position_past_64_bits_on_redis(
    make_client: MakeClient, totals: Counter[str], redis_url: str, position: str, how: str
) -> None:
    """The smallest failing examples the resume fuzzing finds, pinned (with the largest id that
    passes): a well-formed id whose parts do not fit in 64 bits is a client's input like any
    other id this server never gave out, never a 5xx."""
    fuzz = await harness(make_client, Settings(port=0, redis_url=redis_url, insecure=True), totals)
    template = f"{WORKBENCH}/agents/{{a}}/events"
    if how == "header":
        request = Request("GET", template, (("a", HOLDER),), headers=(("Last-Event-ID", position),))
    else:
        request = Request("GET", template, (("a", HOLDER),), params=(("last_event_id", position),))
    await fuzz.case(request)
