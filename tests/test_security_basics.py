"""Security, first step (issue 4): security headers on every kind of response, CORS closed by
default and open only to configured origins, the per-process stream limit (503 + Retry-After,
and it recovers), the message length limit, and the settings that configure them."""

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from app.process.settings import Settings, load_settings
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    Reply,
    call,
    create,
    exchange,
    session_events,
    streams_open,
    transcript,
    until_streams_open,
)
from tests.support.app_server import AppClient, MakeClient
from tests.support.sse import SSEStream, open_stream

APP_ORIGIN = "https://app.example"
EVIL_ORIGIN = "https://evil.example"
MAX_BODY = 64 * 1024
# How long a stream must stay silent to show that a refused request published nothing.
QUIET = 0.3
# Bounded wait for the server to notice a stream its client closed.
RELEASE_DEADLINE = 5.0
# Longest wait for one plain (non-stream) request.
REQUEST_DEADLINE = 5.0


# --- helpers -----------------------------------------------------------------------------------


def cors_headers(response: Reply | aiohttp.ClientResponse) -> dict[str, str]:
    """Every Access-Control-* header of ``response`` (lower-cased names)."""
    return {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def header_list(value: str | None) -> set[str]:
    """A comma-separated header value as a set of lower-cased tokens."""
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def assert_json_headers(response: Reply | aiohttp.ClientResponse, what: str) -> None:
    assert response.headers.get("X-Content-Type-Options") == "nosniff", what
    assert response.headers.get("Cache-Control") == "no-store", what


def assert_sse_headers(response: aiohttp.ClientResponse, what: str) -> None:
    assert response.headers["Content-Type"].startswith("text/event-stream"), what
    assert response.headers.get("X-Content-Type-Options") == "nosniff", what
    assert response.headers.get("Cache-Control") == "no-cache", what
    assert response.headers.get("X-Accel-Buffering") == "no", what


async def preflight(
    client: AppClient, path: str, origin: str, method: str, request_headers: str | None = None
) -> aiohttp.ClientResponse:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if request_headers is not None:
        headers["Access-Control-Request-Headers"] = request_headers
    async with asyncio.timeout(REQUEST_DEADLINE):
        async with client.options(path, headers=headers) as response:
            await response.read()
    return response


# --- 1. security headers -----------------------------------------------------------------------


async def test_security_headers_on_json_responses(client: AppClient) -> None:
    """Every JSON answer (2xx, 4xx from handlers and from aiohttp's router/body limit, health)
    says nosniff and no-store."""
    await create(client, "hdr")
    await call(client, "POST", f"{CHATBOT}/manual/escalate", {"session_name": "hdr"}, status=200)
    big = b'{"session_name": "hdr", "content": "' + b"x" * (MAX_BODY + 16) + b'"}'
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/health", {}, 200),
        ("GET", "/health/ready", {}, 200),
        ("POST", f"{CHATBOT}/sessions", {"json": {"session_name": "hdr-2"}}, 201),
        ("GET", f"{CHATBOT}/sessions/hdr", {}, 200),
        ("GET", f"{CHATBOT}/sessions/hdr/messages", {}, 200),
        ("POST", f"{CHATBOT}/chat", {"json": {"session_name": "hdr", "content": "hi"}}, 200),
        ("GET", f"{WORKBENCH}/sessions", {}, 200),
        ("POST", f"{WORKBENCH}/sessions/hdr/takeover", {"json": {"agent_id": "a1"}}, 200),
        ("POST", f"{CHATBOT}/chat", {"json": {"session_name": "hdr"}}, 400),
        (
            "POST",
            f"{CHATBOT}/chat",
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
        ),
        ("GET", "/no/such/route", {}, 404),
        ("GET", f"{CHATBOT}/sessions/ghost", {}, 404),
        ("GET", session_events("ghost"), {}, 404),
        ("PUT", f"{CHATBOT}/chat", {"json": {}}, 405),
        ("POST", f"{CHATBOT}/sessions", {"json": {"session_name": "hdr"}}, 409),
        ("POST", f"{WORKBENCH}/sessions/hdr/takeover", {"json": {"agent_id": "a2"}}, 409),
        ("POST", f"{CHATBOT}/chat", {"data": big, "headers": {"Content-Type": "application/json"}}, 413),
        (
            "POST",
            f"{CHATBOT}/chat",
            {"data": b"x=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            415,
        ),
    ]
    for method, path, kwargs, status in cases:
        what = f"{method} {path} -> {status}"
        async with asyncio.timeout(REQUEST_DEADLINE):
            async with client.request(method, path, **kwargs) as response:
                text = await response.text()
        assert response.status == status, f"{what}: got {response.status} {text}"
        assert response.content_type == "application/json", what
        assert_json_headers(response, what)


async def test_security_headers_on_event_streams(client: AppClient) -> None:
    """SSE streams say nosniff, keep aiohttp-sse's no-cache (not no-store) and X-Accel-Buffering."""
    await create(client, "hdr-sse")
    for path in (
        session_events("hdr-sse"),
        f"{WORKBENCH}/sessions/hdr-sse/events",
        f"{WORKBENCH}/agents/a1/events",
    ):
        async with open_stream(client, path) as (stream, _):
            assert_sse_headers(stream.response, path)


# --- 2. CORS closed by default -----------------------------------------------------------------


async def test_cors_closed_by_default(client: AppClient) -> None:
    """Without configured origins no response carries any Access-Control-* header: preflights
    and simple requests from another origin are left for the browser to refuse."""
    await create(client, "closed")
    for path, method in (
        (f"{CHATBOT}/chat", "POST"),
        (f"{CHATBOT}/sessions", "POST"),
        (f"{WORKBENCH}/sessions/closed/takeover", "POST"),
        (session_events("closed"), "GET"),
    ):
        response = await preflight(client, path, EVIL_ORIGIN, method, "content-type, authorization")
        assert cors_headers(response) == {}, (path, dict(response.headers))
        assert response.headers.get("X-Content-Type-Options") == "nosniff"

    origin = {"Origin": EVIL_ORIGIN}
    reply = await exchange(client, "GET", f"{CHATBOT}/sessions/closed", status=200, headers=origin)
    assert cors_headers(reply) == {}
    reply = await exchange(
        client,
        "POST",
        f"{CHATBOT}/chat",
        {"session_name": "closed", "content": "hi"},
        status=200,
        headers=origin,
    )
    assert cors_headers(reply) == {}
    async with open_stream(client, session_events("closed"), headers=origin) as (stream, _):
        assert cors_headers(stream.response) == {}


# --- 3. CORS open for configured origins -------------------------------------------------------


async def test_cors_preflight_for_configured_origin(make_client: MakeClient, settings: Settings) -> None:
    """A configured origin's preflight is allowed: its origin echoed, the method and the asked
    headers (content-type, authorization; last-event-id for streams) allowed, no credentials."""
    client = await make_client(settings, cors_origins=(APP_ORIGIN,))
    await create(client, "open")
    cases = [
        (f"{CHATBOT}/chat", "POST", "content-type, authorization"),
        (f"{CHATBOT}/sessions", "POST", "content-type"),
        (f"{CHATBOT}/manual/escalate", "POST", "content-type, authorization"),
        (f"{WORKBENCH}/sessions/open/takeover", "POST", "content-type, authorization"),
        (f"{WORKBENCH}/sessions/open/messages", "POST", "content-type, authorization"),
        (f"{CHATBOT}/sessions/open", "GET", "authorization"),
        (session_events("open"), "GET", "last-event-id"),
        (f"{WORKBENCH}/agents/a1/events", "GET", "last-event-id, authorization"),
    ]
    for path, method, asked in cases:
        what = f"preflight {method} {path}"
        response = await preflight(client, path, APP_ORIGIN, method, asked)
        assert response.status == 200, (what, response.status)
        assert response.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN, what
        assert method.lower() in header_list(response.headers.get("Access-Control-Allow-Methods")), what
        assert header_list(asked) <= header_list(response.headers.get("Access-Control-Allow-Headers")), what
        assert "Access-Control-Allow-Credentials" not in response.headers, what
        assert response.headers.get("X-Content-Type-Options") == "nosniff", what


async def test_cors_actual_requests_for_configured_origin(
    make_client: MakeClient, settings: Settings
) -> None:
    """Real requests from a configured origin carry Access-Control-Allow-Origin (JSON answers,
    errors and SSE streams alike), and expose Retry-After to the page."""
    client = await make_client(settings, cors_origins=(APP_ORIGIN,))
    await create(client, "open")
    origin = {"Origin": APP_ORIGIN}

    response = await exchange(client, "GET", f"{CHATBOT}/sessions/open", status=200, headers=origin)
    assert response.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN
    assert "retry-after" in header_list(response.headers.get("Access-Control-Expose-Headers"))
    assert_json_headers(response, "GET session with Origin")

    response = await exchange(
        client,
        "POST",
        f"{CHATBOT}/chat",
        {"session_name": "open", "content": "hi"},
        status=200,
        headers=origin,
    )
    assert response.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN

    response = await exchange(client, "GET", f"{CHATBOT}/sessions/ghost", status=404, headers=origin)
    assert response.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN

    for path in (session_events("open"), f"{WORKBENCH}/agents/a1/events"):
        async with open_stream(client, path, headers=origin) as (stream, _):
            assert stream.response.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN, path
            assert_sse_headers(stream.response, path)


async def test_cors_other_origin_still_refused(make_client: MakeClient, settings: Settings) -> None:
    """With one origin configured, another origin's preflight gets no Access-Control-* header
    and its requests no Access-Control-Allow-Origin."""
    client = await make_client(settings, cors_origins=(APP_ORIGIN,))
    await create(client, "open")
    for path, method in ((f"{CHATBOT}/chat", "POST"), (session_events("open"), "GET")):
        response = await preflight(client, path, EVIL_ORIGIN, method, "content-type")
        assert cors_headers(response) == {}, (path, dict(response.headers))
    origin = {"Origin": EVIL_ORIGIN}
    reply = await exchange(client, "GET", f"{CHATBOT}/sessions/open", status=200, headers=origin)
    assert "Access-Control-Allow-Origin" not in reply.headers
    async with open_stream(client, session_events("open"), headers=origin) as (stream, _):
        assert "Access-Control-Allow-Origin" not in stream.response.headers
    # A prefix or a different scheme of the configured origin is another origin too.
    for lookalike in ("http://app.example", "https://app.example.evil.example"):
        response = await preflight(client, f"{CHATBOT}/chat", lookalike, "POST", "content-type")
        assert cors_headers(response) == {}, lookalike


# --- 4. max_streams ----------------------------------------------------------------------------


async def expect_too_many_streams(client: AppClient, path: str) -> None:
    response = await exchange(client, "GET", path, status=503)
    body = response.body
    assert body["error"]["code"] == "too_many_streams", body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0
    assert_json_headers(response, f"503 on {path}")


async def test_max_streams_refuses_and_recovers(
    make_client: MakeClient, settings: Settings, backend: str, redis: Redis
) -> None:
    """With max_streams=3 the fourth stream (on either sub-app) is a JSON 503 too_many_streams
    with Retry-After that subscribes nothing; once a stream closes a new one opens again."""
    client = await make_client(settings, max_streams=3)

    async def subscribers(channel: str) -> int:
        """Redis subscribers of ``channel`` (0 on the memory backend, which has no Redis)."""
        if backend != "redis":
            return 0
        return sum(count for _, count in await redis.pubsub_numsub(channel))

    await create(client, "lim")
    async with AsyncExitStack() as stack:
        for _ in range(2):
            await stack.enter_async_context(open_stream(client, session_events("lim")))
        async with open_stream(client, f"{WORKBENCH}/agents/a1/events"):
            assert await streams_open(client) == 3
            for path in (
                session_events("lim"),
                f"{WORKBENCH}/sessions/lim/events",
                f"{WORKBENCH}/agents/a2/events",
            ):
                await expect_too_many_streams(client, path)
            assert await streams_open(client) == 3
            # The refused agent stream never subscribed its own channel (a1's open one did).
            assert await subscribers("sse:agent:a1") == (1 if backend == "redis" else 0)
            assert await subscribers("sse:agent:a2") == 0
        await until_streams_open(client, 2, timeout=RELEASE_DEADLINE)
        async with open_stream(client, session_events("lim")) as (stream, connected):
            assert connected.payload["session_name"] == "lim"
            assert await streams_open(client) == 3
            await expect_too_many_streams(client, session_events("lim"))
            # The recovered stream is live: it sees what is published now.
            await call(
                client,
                "POST",
                f"{CHATBOT}/chat",
                {"session_name": "lim", "content": "hello"},
                status=200,
            )
            event = await stream.next_of("new_message")
            assert event.payload["message"]["content"] == "hello"
    await until_streams_open(client, 0, timeout=RELEASE_DEADLINE)


async def test_max_streams_holds_under_a_burst(make_client: MakeClient, settings: Settings) -> None:
    """Ten streams asked for at once with max_streams=3: exactly three open, seven get 503."""
    client = await make_client(settings, max_streams=3)
    await create(client, "burst")
    responses: list[aiohttp.ClientResponse] = []
    try:
        async with asyncio.timeout(10):
            responses = list(
                await asyncio.gather(
                    *(
                        client.get(session_events("burst"), timeout=aiohttp.ClientTimeout(total=None))
                        for _ in range(10)
                    )
                )
            )
            opened = [r for r in responses if r.status == 200]
            for response in opened:
                assert (await SSEStream(response).next()).type == "connected"
        statuses = Counter(r.status for r in responses)
        assert statuses == {200: 3, 503: 7}, f"statuses of 10 concurrent opens: {statuses}"
        assert await streams_open(client) == 3
    finally:
        for response in responses:
            response.close()
    await until_streams_open(client, 0, timeout=RELEASE_DEADLINE)


# --- 5. max_message ----------------------------------------------------------------------------


def assert_content_too_long(body: Any) -> None:
    assert body["error"]["code"] == "validation_error", body
    assert set(body["error"]["fields"]) == {"content"}, body
    assert body["error"]["fields"]["content"], body


@pytest.mark.parametrize("char", ["x", "ü", "人"])
async def test_max_message_on_chat(make_client: MakeClient, settings: Settings, char: str) -> None:
    """With max_message=10, a 10-character chat message (counted in characters, not bytes) is
    accepted; 11 is a 400 validation_error on content that stores and publishes nothing."""
    client = await make_client(settings, max_message=10)
    await create(client, "mm")
    async with open_stream(client, session_events("mm")) as (stream, _):
        body = await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": "mm", "content": char * 10},
            status=200,
        )
        assert body["message"]["content"] == char * 10
        events = await stream.take(2)
        assert [e.payload["message"]["role"] for e in events] == ["customer", "bot"]
        before = await transcript(client, "mm")
        assert len(before) == 2

        body = await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": "mm", "content": char * 11},
            status=400,
        )
        assert_content_too_long(body)
        await stream.assert_quiet(QUIET)
        assert await transcript(client, "mm") == before
        session = await call(client, "GET", f"{CHATBOT}/sessions/mm", status=200)
        assert session["status"] == "bot_active"

    # A refused chat does not create the session it names either.
    body = await call(
        client,
        "POST",
        f"{CHATBOT}/chat",
        {"session_name": "mm-new", "content": char * 11},
        status=400,
    )
    assert_content_too_long(body)
    await call(client, "GET", f"{CHATBOT}/sessions/mm-new", status=404)


async def test_max_message_on_agent_message(make_client: MakeClient, settings: Settings) -> None:
    """With max_message=10, the holding agent's 10-character message is accepted; 11 is a 400
    validation_error on content, with nothing stored and nothing on the session or agent stream."""
    client = await make_client(settings, max_message=10)
    await create(client, "mma")
    await call(client, "POST", f"{CHATBOT}/manual/escalate", {"session_name": "mma"}, status=200)
    await call(client, "POST", f"{WORKBENCH}/sessions/mma/takeover", {"agent_id": "a1"}, status=200)
    path = f"{WORKBENCH}/sessions/mma/messages"
    async with (
        open_stream(client, session_events("mma")) as (session_stream, _),
        open_stream(client, f"{WORKBENCH}/agents/a1/events") as (agent_stream, _),
    ):
        body = await call(client, "POST", path, {"agent_id": "a1", "content": "y" * 10}, status=200)
        assert body["message"]["content"] == "y" * 10
        event = await session_stream.next_of("new_message")
        assert event.payload["message"]["role"] == "agent"
        before = await transcript(client, "mma")

        body = await call(client, "POST", path, {"agent_id": "a1", "content": "y" * 11}, status=400)
        assert_content_too_long(body)
        await asyncio.gather(session_stream.assert_quiet(QUIET), agent_stream.assert_quiet(QUIET))
        assert await transcript(client, "mma") == before

        # The customer's side obeys the same limit while an agent holds the session.
        body = await call(
            client,
            "POST",
            f"{CHATBOT}/chat",
            {"session_name": "mma", "content": "z" * 11},
            status=400,
        )
        assert_content_too_long(body)
        await asyncio.gather(session_stream.assert_quiet(QUIET), agent_stream.assert_quiet(QUIET))
        assert await transcript(client, "mma") == before


@pytest.mark.parametrize("value", [0, -1, 4001, 10_000])
def test_settings_refuse_out_of_range_max_message(value: int) -> None:
    """max_message must lie in 1..4000, in Settings and through load_settings."""
    with pytest.raises(ValueError, match="max_message"):
        Settings(max_message=value)
    with pytest.raises(ValueError, match="max_message"):
        load_settings(["--max-message", str(value)], {})
    with pytest.raises(ValueError, match="max_message"):
        load_settings([], {"SWITCHBOARD_MAX_MESSAGE": str(value)})


@pytest.mark.parametrize("value", [1, 4000])
def test_settings_accept_max_message_bounds(value: int) -> None:
    """1 and 4000 characters are both valid limits."""
    assert Settings(max_message=value).max_message == value


def test_settings_refuse_zero_max_streams() -> None:
    """max_streams must be at least 1."""
    with pytest.raises(ValueError, match="max_streams"):
        Settings(max_streams=0)


# --- 6. settings parsing -----------------------------------------------------------------------


def test_security_settings_defaults() -> None:
    """CORS closed, 10,000 streams and 4,000 characters by default."""
    settings = load_settings([], {})
    assert settings.cors_origins == ()
    assert settings.max_streams == 10_000
    assert settings.max_message == 4000


def test_cors_origin_flag_is_repeatable() -> None:
    """Each --cors-origin adds one origin, in order."""
    settings = load_settings(["--cors-origin", "https://a.example", "--cors-origin", "https://b.example"], {})
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert load_settings(["--cors-origin", "https://a.example"], {}).cors_origins == ("https://a.example",)


def test_cors_origins_environment() -> None:
    """SWITCHBOARD_CORS_ORIGINS is comma-separated; blanks and empty items are dropped."""
    env = {"SWITCHBOARD_CORS_ORIGINS": "https://a.example, https://b.example"}
    assert load_settings([], env).cors_origins == ("https://a.example", "https://b.example")
    env = {"SWITCHBOARD_CORS_ORIGINS": " https://a.example ,, "}
    assert load_settings([], env).cors_origins == ("https://a.example",)
    assert load_settings([], {"SWITCHBOARD_CORS_ORIGINS": ""}).cors_origins == ()


def test_cors_origin_flag_beats_environment() -> None:
    """--cors-origin replaces (does not extend) SWITCHBOARD_CORS_ORIGINS."""
    env = {"SWITCHBOARD_CORS_ORIGINS": "https://a.example, https://b.example"}
    settings = load_settings(["--cors-origin", "https://c.example"], env)
    assert settings.cors_origins == ("https://c.example",)


@pytest.mark.parametrize(
    ("flag", "var", "field"),
    [
        ("--max-streams", "SWITCHBOARD_MAX_STREAMS", "max_streams"),
        ("--max-message", "SWITCHBOARD_MAX_MESSAGE", "max_message"),
        ("--start-rate", "SWITCHBOARD_START_RATE", "start_rate"),
    ],
)
def test_limit_flags_and_environment(flag: str, var: str, field: str) -> None:
    """Each limit comes from its flag or its variable (as an int), and the flag wins."""
    assert getattr(load_settings([flag, "7"], {}), field) == 7
    from_env = getattr(load_settings([], {var: "8"}), field)
    assert from_env == 8 and type(from_env) is int
    assert getattr(load_settings([flag, "9"], {var: "8"}), field) == 9


@pytest.mark.parametrize("flag", ["--max-streams", "--max-message", "--start-rate"])
def test_limit_flags_reject_non_integers(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A limit flag that is not an integer is a usage error."""
    with pytest.raises(SystemExit):
        load_settings([flag, "many"], {})
    assert flag in capsys.readouterr().err


async def test_configured_settings_reach_the_app(make_client: MakeClient, settings: Settings) -> None:
    """Settings loaded from flags drive the running app: a 5-character limit refuses 6."""
    loaded = load_settings(["--max-message", "5", "--cors-origin", APP_ORIGIN], {})
    client = await make_client(settings, max_message=loaded.max_message, cors_origins=loaded.cors_origins)
    body = await call(
        client, "POST", f"{CHATBOT}/chat", {"session_name": "cfg", "content": "123456"}, status=400
    )
    assert_content_too_long(body)
    response = await preflight(client, f"{CHATBOT}/chat", APP_ORIGIN, "POST", "content-type")
    assert response.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN


async def test_channels_per_stream_limit(make_client: MakeClient, settings: Settings) -> None:
    """A stream that would carry more channels than max_channels is refused (400) before it
    opens, and the limit leaves smaller streams alone."""
    client = await make_client(settings, max_channels=1)
    response = await client.get("/workbench/api/agents/a1/events")  # agent + broadcast: 2
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "too_many_channels"
    assert (await (await client.get("/health")).json())["streams"] == 0
    created = await client.post("/chatbot/api/sessions", json={"session_name": "one"})
    assert created.status == 201
    async with open_stream(client, "/chatbot/api/sessions/one/events") as (_, connected):
        assert connected.payload["channels"] == ["sse:session:one"]
