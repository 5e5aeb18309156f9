"""The API client the tests share: the paths, one bounded request (``send``) and the checked
call built on it (``call``: the status asserted, the JSON answer returned), and the small
requests many tests make (create a session, chat, escalate, an agent's action...).

``http`` is a TestClient (``url`` a path) or an aiohttp ClientSession (``url`` absolute, or a
path after ``base``)."""

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from app.domain.store import Status
from tests.support.app_server import AppClient
from tests.support.wait import until

Http = AppClient | aiohttp.ClientSession

CHATBOT = "/chatbot/api"
WORKBENCH = "/workbench/api"
STATUSES: tuple[Status, ...] = ("bot_active", "waiting_agent", "agent_active", "closed")
REQUEST_TIMEOUT = 5.0  # the longest one plain (non-stream) request may take
MAX_PAGES = 50  # the most pages of one listing a test follows


def session_events(name: str, sub: str = "chatbot") -> str:
    return f"/{sub}/api/sessions/{name}/events"


def agent_events(agent_id: str) -> str:
    return f"{WORKBENCH}/agents/{agent_id}/events"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Reply:
    """A whole answer: the body parsed when it is JSON (else its text), and how long it took."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    content_type: str
    body: Any
    elapsed: float


async def send(
    http: Http,
    method: str,
    url: str | URL,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Reply:
    """One request with ``body`` as JSON (none when None), read whole within ``timeout`` (an
    event stream opened by mistake fails the test instead of hanging it); any status."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        async with http.request(method, url, json=body, headers=headers) as response:
            raw = await response.read()
            elapsed = time.monotonic() - started
            parsed: Any = raw.decode(errors="replace")
            if response.content_type == "application/json":
                parsed = json.loads(raw)
            return Reply(response.status, response.headers.copy(), response.content_type, parsed, elapsed)


async def exchange(
    http: Http,
    method: str,
    url: str | URL,
    body: Any = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    what: str = "",
    timeout: float = REQUEST_TIMEOUT,
) -> Reply:
    """``send``, asserting the status and a JSON answer; the whole reply (for its headers)."""
    reply = await send(http, method, url, body, headers=headers, timeout=timeout)
    assert reply.status == status, (
        f"{what} {method} {url} -> {reply.status}, wanted {status}: {str(reply.body)[:300]}"
    )
    assert reply.content_type == "application/json", (what, method, url, reply.headers)
    return reply


async def call(
    http: Http,
    method: str,
    url: str | URL,
    body: Any = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    what: str = "",
    timeout: float = REQUEST_TIMEOUT,
) -> Any:
    """``exchange``'s JSON answer."""
    reply = await exchange(
        http, method, url, body, status=status, headers=headers, what=what, timeout=timeout
    )
    return reply.body


async def call_json(
    http: Http,
    method: str,
    url: str | URL,
    body: Any = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``call`` for an endpoint that answers a JSON object (checked, so typed)."""
    answer = await call(http, method, url, body, status=status, headers=headers)
    assert isinstance(answer, dict), answer
    return answer


def with_query(url: str, **params: str | int | None) -> str:
    """``url`` with ``params`` added to its query string (None: left out)."""
    query = urlencode({key: value for key, value in params.items() if value is not None})
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def every_page(
    http: Http, url: str, *, limit: int | None = None, headers: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every page of a listing (the queue, a transcript), following ``next_cursor`` until it is
    null: the answers, in order (at most MAX_PAGES of them, else the test fails)."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await call_json(http, "GET", with_query(url, limit=limit, cursor=cursor), headers=headers)
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"GET {url}: still a next_cursor after {MAX_PAGES} pages")


# --- the requests of a conversation --------------------------------------------------------


async def create(
    http: Http, name: str, *, base: str = "", headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """POST /sessions: the new session (with its token when the app is secure)."""
    body = {"session_name": name}
    return await call_json(http, "POST", f"{base}{CHATBOT}/sessions", body, status=201, headers=headers)


async def chat(
    http: Http,
    name: str,
    content: str,
    *,
    base: str = "",
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    body = {"session_name": name, "content": content}
    return await call_json(http, "POST", f"{base}{CHATBOT}/chat", body, headers=headers)


async def escalate(
    http: Http,
    name: str,
    reason: str | None = None,
    *,
    base: str = "",
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST /manual/escalate, with ``reason`` when one is given."""
    body: dict[str, Any] = {"session_name": name}
    if reason is not None:
        body["reason"] = reason
    return await call_json(http, "POST", f"{base}{CHATBOT}/manual/escalate", body, headers=headers)


async def act(
    http: Http,
    name: str,
    action: str,
    agent_id: str,
    *,
    base: str = "",
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """takeover / release / close by ``agent_id``."""
    url = f"{base}{WORKBENCH}/sessions/{name}/{action}"
    return await call_json(http, "POST", url, {"agent_id": agent_id}, headers=headers)


async def agent_say(
    http: Http,
    name: str,
    agent_id: str,
    content: str,
    *,
    base: str = "",
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    url = f"{base}{WORKBENCH}/sessions/{name}/messages"
    return await call_json(http, "POST", url, {"agent_id": agent_id, "content": content}, headers=headers)


async def read_up_to(
    http: Http,
    name: str,
    up_to: str,
    agent_id: str | None = None,
    *,
    base: str = "",
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST .../read: the customer's (no ``agent_id``) or an agent's; the session after it."""
    if agent_id is None:
        url, body = f"{base}{CHATBOT}/sessions/{name}/read", {"up_to": up_to}
    else:
        url, body = f"{base}{WORKBENCH}/sessions/{name}/read", {"agent_id": agent_id, "up_to": up_to}
    return await call_json(http, "POST", url, body, headers=headers)


async def get_session(http: Http, name: str, sub: str = "chatbot", *, base: str = "") -> dict[str, Any]:
    return await call_json(http, "GET", f"{base}/{sub}/api/sessions/{name}")


async def transcript(
    http: Http,
    name: str,
    sub: str = "chatbot",
    *,
    base: str = "",
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The session's messages, oldest first (every page)."""
    pages = await every_page(http, f"{base}/{sub}/api/sessions/{name}/messages", headers=headers)
    assert all(page["session_name"] == name for page in pages), pages
    return [message for page in pages for message in page["messages"]]


async def in_status(
    http: Http,
    name: str,
    status: str,
    *,
    agent_id: str,
    reason: str | None = None,
    base: str = "",
) -> dict[str, Any]:
    """Create ``name`` and bring it to ``status`` through the API (``agent_id`` holds it when
    agent_active, closes it when closed); the session."""
    await create(http, name, base=base)
    if status == "waiting_agent":
        await escalate(http, name, reason, base=base)
    elif status == "agent_active":
        await act(http, name, "takeover", agent_id, base=base)
    elif status == "closed":
        await act(http, name, "close", agent_id, base=base)
    return await get_session(http, name, base=base)


async def health(http: Http, base: str = "") -> dict[str, Any]:
    return await call_json(http, "GET", f"{base}/health")


async def streams_open(http: Http, base: str = "") -> int:
    """How many streams the process says it holds (/health)."""
    return int((await health(http, base))["streams"])


async def post_until_served(
    http: Http,
    url: str,
    body: dict[str, Any],
    *,
    timeout: float,
    interval: float = 0.1,
    while_away: bool = False,
) -> tuple[dict[str, Any], int]:
    """What a client does after a 503: POST again until served (bounded); the answer, which
    must be a 200, and how many 503s came first. ``while_away``: a refused or dropped
    connection (a server restarting) is retried too."""
    refused = 0
    async with asyncio.timeout(timeout):
        for _ in range(int(timeout / interval) + 1):
            try:
                reply = await send(http, "POST", url, body)
            except aiohttp.ClientConnectionError:
                if not while_away:
                    raise
            else:
                if reply.status != 503:
                    assert reply.status == 200, (url, reply)
                    return reply.body, refused
                refused += 1
            await asyncio.sleep(interval)
    raise AssertionError(f"POST {url} still refused after {timeout} s")


async def until_streams_open(http: Http, wanted: int, *, timeout: float, base: str = "") -> None:
    """Poll /health (bounded) until it counts ``wanted`` open streams."""

    def reached(count: int) -> bool:
        return count == wanted

    await until(
        partial(streams_open, http, base), reached, timeout=timeout, what=f"/health counting {wanted} streams"
    )


async def assert_json_error(http: Http, method: str, url: str, status: int, code: str) -> Reply:
    """The request (a POST with ``{}``) is refused with ``status`` in the JSON error shape,
    error ``code``; the reply, for its headers."""
    reply = await send(http, method, url, {} if method == "POST" else None)
    assert reply.status == status, (method, url, reply.status, reply.body)
    assert reply.content_type == "application/json", reply.content_type
    assert reply.body["error"]["code"] == code, reply.body
    return reply
