"""The browser console for real: Debian's Chromium driven by Playwright against real ``run.py``
processes and a real redis-server with AOF, all on 127.0.0.1. Nothing is mocked.

What these tests prove (the console issue):

- the pages under ``/console/`` (``/`` opens them) are served with their CSP, load nothing from
  another origin, and hold no inline script or style and no HTML built from strings;
- a customer page and an agent page, in two browser contexts, play the whole handoff live over
  EventSource: the bot answers, "talk to a human", the agent's queue updated live, take over,
  messages both ways, release back to the bot, close (that session, and another from the queue);
- when Redis (killed, AOF) and the server process are both restarted under the open pages, each
  page's EventSource reconnects by itself sending Last-Event-ID, the events published while it was
  away arrive from the replay without any refetch, and the transcript on screen is exactly the
  server's, each message once;
- when a resume cannot be honoured (the browser's reconnection refused with 503, then the
  client's own reopening with a position the server never gave out), ``"recovered": false`` makes
  every view refetch its state and say so;
- under authentication the customer page keeps its conversation's token (and a reload resumes
  from ``?last_event_id=``), and the agent page works with a minted agent token;
- a long queue is shown a page at a time ("Show more"), arrivals joining its end;
- both pages fit a 375x667 phone; the end of the story is played at that size.

Screenshots of both pages, desktop and phone, are taken every run (never compared) and
written to the directory ``SWITCHBOARD_SCREENSHOTS`` names (``make screenshots``: docs/img/),
else to the test's temporary directory, so that a test run leaves the checkout unchanged.
"""

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
import redis
from aiohttp import web
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    Route,
    ViewportSize,
    async_playwright,
    expect,
)
from playwright.async_api import Error as PlaywrightError

from app.domain.auth import TokenAuthority
from handlers.chatbot import routes as chatbot_routes
from tests.support.api import CHATBOT, WORKBENCH, call, call_json
from tests.support.processes import ROOT, PeerProcess, ServerProcess
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(90)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The machine's network is closed: without these, Chromium keeps trying to reach Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000  # every Playwright wait is bounded by this
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 375, "height": 667}
REDIS_ON = {"USE_REDIS_SSE": "true"}
# Event streams only (not the JSON API), whatever the query string.
STREAMS = re.compile(r"/events(\?|$)")
expect.set_options(timeout=WAIT_MS)

CUSTOMER = "browser-demo"
SECOND = "second-customer"
AGENT = "alice"


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with AOF that the test kills and starts again on the same port; every
    write is fsynced (``appendfsync always``), so a SIGKILL right after a message loses nothing."""
    server = RedisServer(tmp_path / "redis-aof", appendonly=True)
    server.start()
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        client.config_set("appendfsync", "always")
    finally:
        client.close()
    yield server
    server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium is not installed (make test installs it)"
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


class Problems:
    """What a page must never do: throw, or break the CSP. Failed requests are expected only
    while the server is away (EventSource retries), so they are recorded, not refused."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.network: list[str] = []

    def watch(self, page: Page, label: str) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"{label}: {error}"))
        page.on("console", lambda message: self._console(label, message))

    def _console(self, label: str, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = message.text
        if "net::ERR_" in text or "Failed to load resource" in text:
            self.network.append(f"{label}: {text}")
        else:
            self.errors.append(f"{label}: {text}")


class StreamOpenings:
    """Every event-stream response a page got: its path and the resume position it asked for
    (the ``Last-Event-ID`` header EventSource sends on its own reconnects, or the
    ``?last_event_id=`` query the client uses when it reopens a stream itself)."""

    def __init__(self, page: Page) -> None:
        self.seen: list[dict[str, Any]] = []
        page.on("response", self._response)

    async def _response(self, response: Response) -> None:
        if not STREAMS.search(response.url):
            return
        try:
            headers = await response.request.all_headers()
        except PlaywrightError:  # the page closed meanwhile
            return
        url = urlsplit(response.url)
        self.seen.append(
            {
                "path": url.path,
                "status": response.status,
                "header": headers.get("last-event-id"),
                "query": parse_qs(url.query).get("last_event_id", [None])[0],
            }
        )

    def of(self, path_end: str) -> list[dict[str, Any]]:
        return [opening for opening in self.seen if opening["path"].endswith(path_end)]


async def new_page(browser: Browser, problems: Problems, label: str) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    problems.watch(page, label)
    return context, page


# --- helpers ---------------------------------------------------------------------------------


async def run(blocking: Any, *args: Any, **kwargs: Any) -> Any:
    """Process control blocks (it polls /health, waits for exit): keep it off the loop that
    talks to the browser."""
    return await asyncio.to_thread(blocking, *args, **kwargs)


async def server_transcript(base: str, name: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(10):
            async with http.get(f"{base}/chatbot/api/sessions/{name}/messages") as response:
                assert response.status == 200, await response.text()
                body = await response.json()
    result: list[dict[str, Any]] = body["messages"]
    return result


async def screen_ids(page: Page, transcript: str) -> list[str]:
    return await page.eval_on_selector_all(  # type: ignore[no-any-return]  # playwright: a page script's result is Any
        f"{transcript} [data-message-id]", "nodes => nodes.map(n => n.dataset.messageId)"
    )


async def assert_same_transcript(page: Page, transcript: str, expected: list[dict[str, Any]]) -> None:
    """The messages on screen are the server's transcript: same ids, same order, each once,
    none still waiting for its echo from the stream."""
    ids = await screen_ids(page, transcript)
    assert len(ids) == len(set(ids)), f"a message is on screen twice: {ids}"
    assert ids == [message["id"] for message in expected], (ids, expected)
    texts = await page.locator(f"{transcript} [data-message-id] .msg-text").all_inner_texts()
    assert texts == [message["content"] for message in expected]
    await expect(page.locator(f"{transcript} [data-local]")).to_have_count(0)


async def connection(page: Page, selector: str) -> dict[str, str]:
    return await page.eval_on_selector(  # type: ignore[no-any-return]  # playwright: a page script's result is Any
        selector, "n => ({state: n.dataset.state, connects: n.dataset.connects, resyncs: n.dataset.resyncs})"
    )


async def fits_width(page: Page) -> None:
    overflow = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px"


async def shoot(page: Page, directory: Path, name: str, *, full_page: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(directory / f"{name}.png"), full_page=full_page, animations="disabled")


async def say(page: Page, field: str, button: str, text: str) -> None:
    await page.fill(field, text)
    await page.click(button)
    await expect(page.locator(field)).to_have_value("")


# --- tests -----------------------------------------------------------------------------------


async def test_console_is_static_and_self_contained(server_process: Any, browser: Browser) -> None:
    """/ opens the console; every page carries the CSP and loads only its own origin's files;
    the static files hold no inline script or style and no external URL."""
    server: ServerProcess = await run(server_process, "--insecure", "--no-redis")
    problems = Problems()
    context, page = await new_page(browser, problems, "home")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        for page_name in ("index", "customer", "agent", "supervisor"):
            path = f"/console/{page_name}.html"
            response = await page.goto(server.url + path)
            assert response is not None and response.status == 200, path
            csp = response.headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "style-src 'self'" in csp, (path, csp)
            await page.wait_for_load_state("load")
        await page.goto(server.url + "/")
        assert page.url == f"{server.url}/console/index.html"
        await expect(page.get_by_role("link", name=re.compile("Customer"))).to_be_visible()
        await expect(page.get_by_role("link", name=re.compile("Agent workbench"))).to_be_visible()
        await expect(page.get_by_role("link", name=re.compile("Supervisor"))).to_be_visible()
    finally:
        await context.close()
    assert requested and all(url.startswith(server.url) for url in requested), requested
    assert not problems.errors and not problems.network, problems.__dict__
    static = ROOT / "app" / "static"
    for file in static.iterdir():
        if file.suffix in {".html", ".js", ".css"}:
            text = file.read_text()
            assert not re.search(r"https?://", text), f"{file.name} names another origin"
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, file.name
            if file.suffix == ".html":
                assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {file.name}"
                assert "style=" not in text and "<style" not in text, f"inline style in {file.name}"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the screenshots go: ``SWITCHBOARD_SCREENSHOTS`` (``make screenshots``: docs/img/),
    else the test's own temporary directory, so a run leaves nothing behind."""
    return Path(os.environ.get("SWITCHBOARD_SCREENSHOTS") or tmp_path / "screenshots")


async def test_handoff_live_and_across_a_redis_and_server_restart(
    server_process: Any, aof_redis: RedisServer, browser: Browser, screenshots: Path
) -> None:
    started = time.monotonic()
    server: ServerProcess = await run(
        server_process, "--insecure", "--redis-url", aof_redis.url, env=REDIS_ON
    )
    base = server.url
    problems = Problems()
    customer_ctx, customer = await new_page(browser, problems, "customer")
    agent_ctx, agent = await new_page(browser, problems, "agent")
    cu_log, ag_log = "#transcript", "#conv-transcript"
    cu_streams, ag_streams = StreamOpenings(customer), StreamOpenings(agent)

    # --- 1. the handoff, live ---------------------------------------------------------------
    # The customer arrives through / and the index page.
    await customer.goto(base + "/")
    await customer.get_by_role("link", name=re.compile("Customer")).click()
    await expect(customer).to_have_url(f"{base}/console/customer.html")
    await customer.get_by_label("Conversation name").fill(CUSTOMER)
    await customer.get_by_role("button", name="Start chat").click()
    await expect(customer.locator("#connection")).to_have_attribute("data-state", "connected")
    await expect(customer.locator("#status")).to_have_attribute("data-status", "bot_active")

    await agent.goto(f"{base}/console/agent.html")
    await agent.get_by_label("Agent id").fill(AGENT)
    await agent.get_by_role("button", name="Open the workbench").click()
    await expect(agent.locator("#connection")).to_have_attribute("data-state", "connected")
    await expect(agent.locator("#queue-count")).to_have_text("0")

    await say(customer, "#message", "#send", "Hello")
    await expect(customer.locator(f"{cu_log} [data-role=bot]")).to_have_count(1)
    await expect(customer.locator(f"{cu_log} [data-role=bot]")).to_contain_text("How can I help")

    await customer.get_by_role("button", name="Talk to a human").click()
    await expect(customer.locator("#status")).to_have_attribute("data-status", "waiting_agent")
    await expect(customer.locator("#status")).to_have_text("Waiting for an agent…")
    await expect(customer.get_by_role("button", name="Talk to a human")).to_be_disabled()

    # The agent's queue shows it live (the agent stream's transfer_request), no reload.
    queued = agent.locator(f"#queue li[data-session={CUSTOMER}]")
    await expect(queued).to_be_visible()
    await expect(agent.locator("#queue-count")).to_have_text("1")
    await queued.get_by_role("button", name="Take over").click()
    await expect(agent.locator("#conv-status")).to_have_attribute("data-status", "agent_active")
    await expect(agent.locator("#queue-count")).to_have_text("0")
    await expect(agent.locator(f"#mine li[data-session={CUSTOMER}]")).to_be_visible()
    await expect(agent.locator(f"{ag_log} [data-role=bot]")).to_have_count(1)  # the history

    await expect(customer.locator("#status")).to_have_attribute("data-status", "agent_active")
    await expect(customer.locator(f"{cu_log} [data-notice=joined]")).to_have_text(
        f"{AGENT} joined the conversation."
    )

    await say(agent, "#reply", "#send", "Hi, this is Alice. How can I help?")
    await expect(customer.locator(f"{cu_log} [data-role=agent]")).to_have_text(
        re.compile("Hi, this is Alice")
    )
    await say(customer, "#message", "#send", "My order is late.")
    await expect(agent.locator(f"{ag_log} [data-role=customer]").last).to_contain_text("My order is late.")
    # The agent's page read it: its read event is the last of the session's channel.
    await expect(customer.locator(f"{cu_log} [data-role=customer][data-read]")).to_have_count(2)

    # --- 2. Redis and the server restart under the open pages --------------------------------
    before = {
        "customer": await connection(customer, "#connection"),
        "agent": await connection(agent, "#connection"),
        "conversation": await connection(agent, "#conv-connection"),
    }
    assert {c["connects"] for c in before.values()} == {"1"}, before
    # The last event id each page saw (the pages keep it in sessionStorage); the agent's open
    # conversation is the customer's session channel, so its last id is the customer's.
    positions = {
        "customer": await customer.evaluate(
            "() => JSON.parse(sessionStorage.getItem('switchboard.customer')).lastEventId"
        ),
        "agent": await agent.evaluate(
            "() => JSON.parse(sessionStorage.getItem('switchboard.agent')).lastEventId"
        ),
    }
    # Hold the pages' reconnections back until the messages below are published, so that they
    # can reach the pages only by the resume from Last-Event-ID.
    for context in (customer_ctx, agent_ctx):
        await context.route(STREAMS, lambda route: route.abort())

    await run(aof_redis.kill)
    assert await run(server.stop) == 0
    for page, selector in ((customer, "#connection"), (agent, "#connection"), (agent, "#conv-connection")):
        await expect(page.locator(selector)).to_have_attribute("data-state", "reconnecting")
    await run(aof_redis.start)
    await run(server.start)  # the same port
    async with aiohttp.ClientSession() as http, http.get(f"{base}/health") as response:
        health = await response.json()
    assert health["broker"] == "redis" and not health["degraded"], health

    # Both sides write while their pages' streams are still away.
    await say(customer, "#message", "#send", "Are you still there?")
    await say(agent, "#reply", "#send", "Yes, checking your order now.")
    # Each sees its own message at once (from the API answer), not the other's yet.
    await expect(customer.locator(f"{cu_log} [data-local]")).to_have_count(1)
    await expect(agent.locator(f"{ag_log} [data-local]")).to_have_count(1)
    await expect(customer.locator(f"{cu_log} [data-role=agent]")).to_have_count(1)
    await expect(agent.locator(f"{ag_log} [data-role=customer]")).to_have_count(2)

    for context in (customer_ctx, agent_ctx):
        await context.unroute(STREAMS)
    # Each EventSource reconnects by itself, resumed: recovered, nothing refetched.
    for page, selector in ((customer, "#connection"), (agent, "#connection"), (agent, "#conv-connection")):
        await expect(page.locator(selector)).to_have_attribute("data-connects", "2")
        await expect(page.locator(selector)).to_have_attribute("data-state", "connected")
        await expect(page.locator(selector)).to_have_attribute("data-resyncs", "1")
    # What was published while they were away arrives from the replay.
    await expect(customer.locator(f"{cu_log} [data-role=agent]").last).to_have_text(
        re.compile("Yes, checking your order now.")
    )
    await expect(agent.locator(f"{ag_log} [data-role=customer]").last).to_contain_text("Are you still there?")
    # The streams were resumed by the browser's own reconnection (EventSource), which sent
    # the last id each page had seen as Last-Event-ID.
    resumed = {
        f"/chatbot/api/sessions/{CUSTOMER}/events": (cu_streams, positions["customer"]),
        f"/workbench/api/agents/{AGENT}/events": (ag_streams, positions["agent"]),
        f"/workbench/api/sessions/{CUSTOMER}/events": (ag_streams, positions["customer"]),
    }
    for path, (openings, position) in resumed.items():
        opened = [o for o in openings.of(path) if o["status"] == 200]
        assert len(opened) == 2, (path, openings.seen)
        assert opened[0]["header"] is None and opened[0]["query"] is None, opened
        assert position and opened[1]["header"] == position, (path, position, opened)
    # And new messages flow live both ways.
    await say(agent, "#reply", "#send", "Found it: it ships tomorrow.")
    await expect(customer.locator(f"{cu_log} [data-role=agent]").last).to_contain_text("it ships tomorrow")
    await say(customer, "#message", "#send", "Great, thank you!")
    await expect(agent.locator(f"{ag_log} [data-role=customer]").last).to_contain_text("Great, thank you!")
    expected = await server_transcript(base, CUSTOMER)
    assert len(expected) == 8, expected
    await assert_same_transcript(customer, cu_log, expected)
    await assert_same_transcript(agent, ag_log, expected)

    # --- 3. screenshots: a held conversation, another customer waiting in the queue ----------
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/chatbot/api/chat",
            json={"session_name": SECOND, "content": "Can I talk to a person, please?"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    await expect(agent.locator(f"#queue li[data-session={SECOND}]")).to_be_visible()
    await shoot(customer, screenshots, "console-customer")
    await shoot(agent, screenshots, "console-agent")
    for page in (customer, agent):
        await page.set_viewport_size(PHONE)
        await fits_width(page)
    await shoot(customer, screenshots, "console-customer-phone")
    await shoot(agent, screenshots, "console-agent-phone", full_page=True)

    # --- 4. a resume the server cannot honour: "recovered": false, and the pages refetch -----
    # The server restarts again. When it is back, the browser's own reconnection is answered
    # 503 (EventSource then gives up for good), so the client reopens the stream itself with
    # ?last_event_id=; that position is replaced by one the server never gave out, which it
    # answers with a fresh stream and "recovered": false.
    mode = {"streams": "abort"}

    async def streams_route(route: Route) -> None:
        url = urlsplit(route.request.url)
        query = parse_qs(url.query)
        if mode["streams"] == "abort":
            await route.abort()
        elif "last_event_id" not in query:  # the browser's reconnection
            await route.fulfill(
                status=503,
                content_type="application/json",
                headers={"Retry-After": "1"},
                body='{"error": {"code": "unavailable", "message": "try again"}}',
            )
        else:  # the client's own reopening
            query["last_event_id"] = ["not-an-id"]
            forged = url._replace(query=urlencode(query, doseq=True)).geturl()
            await route.continue_(url=forged)

    for context in (customer_ctx, agent_ctx):
        await context.route(STREAMS, streams_route)
    assert await run(server.stop) == 0
    for page, selector in ((customer, "#connection"), (agent, "#connection"), (agent, "#conv-connection")):
        await expect(page.locator(selector)).to_have_attribute("data-state", "reconnecting")
    await run(server.start)
    await say(customer, "#message", "#send", "Can you send it express?")
    mode["streams"] = "refuse"
    for page, selector in ((customer, "#connection"), (agent, "#connection"), (agent, "#conv-connection")):
        await expect(page.locator(selector)).to_have_attribute("data-connects", "3")
        await expect(page.locator(selector)).to_have_attribute("data-resyncs", "2")
        await expect(page.locator(selector)).to_contain_text("refreshed")
    for context in (customer_ctx, agent_ctx):
        await context.unroute(STREAMS)
    for openings, path in (
        (cu_streams, f"/chatbot/api/sessions/{CUSTOMER}/events"),
        (ag_streams, f"/workbench/api/agents/{AGENT}/events"),
        (ag_streams, f"/workbench/api/sessions/{CUSTOMER}/events"),
    ):
        statuses = [o["status"] for o in openings.of(path)]
        assert statuses[:2] == [200, 200] and 503 in statuses[2:], (path, openings.seen)
        assert statuses[-1] == 200 and openings.of(path)[-1]["query"] == "not-an-id", openings.seen
    # Not in any replay: the agent sees it because the page refetched the transcript.
    await expect(agent.locator(f"{ag_log} [data-role=customer]").last).to_contain_text("express")
    await expect(agent.locator(f"#queue li[data-session={SECOND}]")).to_be_visible()
    await say(agent, "#reply", "#send", "Sure, upgraded to express.")
    await expect(customer.locator(f"{cu_log} [data-role=agent]").last).to_contain_text("express")
    expected = await server_transcript(base, CUSTOMER)
    assert len(expected) == 10, expected
    await assert_same_transcript(customer, cu_log, expected)
    await assert_same_transcript(agent, ag_log, expected)

    # --- 5. at phone size: release, back to the bot, close ------------------------------------
    await agent.get_by_role("button", name="Release to bot").click()
    await expect(agent.locator("#conv-status")).to_have_attribute("data-status", "bot_active")
    await expect(agent.locator("#mine li")).to_have_count(0)
    await expect(customer.locator("#status")).to_have_attribute("data-status", "bot_active")
    await expect(customer.locator(f"{cu_log} [data-notice=left]")).to_contain_text("back to the bot")
    await expect(customer.get_by_role("button", name="Talk to a human")).to_be_enabled()
    await say(customer, "#message", "#send", "Thanks, bye")
    await expect(customer.locator(f"{cu_log} [data-role=bot]")).to_have_count(2)
    await expect(agent.locator(f"{ag_log} [data-role=bot]").last).to_contain_text("Thanks, noted")
    await expect(agent.locator("#reply")).to_be_disabled()

    # The agent closes it from the conversation still open (nobody holds it now).
    await agent.get_by_role("button", name="Close").click()
    await expect(agent.locator("#conv-status")).to_have_attribute("data-status", "closed")
    await expect(customer.locator("#status")).to_have_attribute("data-status", "closed")
    await expect(customer.locator(f"{cu_log} [data-notice=closed]")).to_be_visible()
    await expect(customer.locator("#message")).to_be_disabled()

    # The other customer: viewed from the queue and closed without taking it over.
    await agent.locator(f"#queue li[data-session={SECOND}]").get_by_role("button", name="View").click()
    await expect(agent.locator("#conv-title")).to_have_text(f"Conversation {SECOND}")
    await expect(agent.locator("#conv-status")).to_have_attribute("data-status", "waiting_agent")
    await expect(agent.locator(f"{ag_log} [data-role=customer]")).to_have_count(1)
    await agent.get_by_role("button", name="Close").click()
    await expect(agent.locator("#conv-status")).to_have_attribute("data-status", "closed")
    await expect(agent.locator("#queue-count")).to_have_text("0")

    final = await server_transcript(base, CUSTOMER)
    await assert_same_transcript(customer, cu_log, final)
    for context in (customer_ctx, agent_ctx):
        await context.close()
    assert not problems.errors, problems.errors
    assert time.monotonic() - started < 80


async def test_pages_with_tokens_and_a_reload(server_process: Any, browser: Browser) -> None:
    """Under authentication: the customer page keeps the token its conversation got (Bearer on
    the API, ?token= on the stream) and resumes after a reload with ?last_event_id=; the agent
    page works with a token from ``run.py token --agent`` (the agent id read from it)."""
    secret = secrets.token_urlsafe(32)
    env = {"SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": secret}
    server: ServerProcess = await run(server_process, "--no-redis", env=env)
    minted = await run(
        subprocess.run,
        [sys.executable, str(ROOT / "run.py"), "token", "--agent", AGENT],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert minted.returncode == 0, minted.stderr
    problems = Problems()
    customer_ctx, customer = await new_page(browser, problems, "customer")
    agent_ctx, agent = await new_page(browser, problems, "agent")
    cu_streams = StreamOpenings(customer)
    cu_log, ag_log = "#transcript", "#conv-transcript"
    try:
        await customer.goto(f"{server.url}/console/customer.html")
        await customer.get_by_role("button", name="Generate").click()
        name = await customer.get_by_label("Conversation name").input_value()
        assert re.fullmatch(r"web-[0-9a-f]{12}", name), name
        await customer.get_by_role("button", name="Start chat").click()
        await expect(customer.locator("#connection")).to_have_attribute("data-state", "connected")
        saved = await customer.evaluate("() => JSON.parse(sessionStorage.getItem('switchboard.customer'))")
        assert saved["name"] == name and saved["token"], saved

        await agent.goto(f"{server.url}/console/agent.html")
        await agent.get_by_label("Token").fill(minted.stdout.strip())
        await agent.get_by_role("button", name="Open the workbench").click()
        await expect(agent.locator("#whoami")).to_have_text(AGENT)
        await expect(agent.locator("#connection")).to_have_attribute("data-state", "connected")

        # Asking the bot for a person escalates (the bot says so, then the queue has it).
        await say(customer, "#message", "#send", "I want to talk to a human")
        await expect(customer.locator("#status")).to_have_attribute("data-status", "waiting_agent")
        # Its place in the queue, live (queue_update) and by GET .../queue after a resync.
        await expect(customer.locator("#queue-place")).to_have_text("You are next in line.")
        await agent.locator(f"#queue li[data-session={name}]").get_by_role("button", name="Take over").click()
        await expect(customer.locator("#status")).to_have_attribute("data-status", "agent_active")
        await expect(customer.locator("#queue-place")).to_be_hidden()
        await say(agent, "#reply", "#send", "Hello from a signed-in agent.")
        await expect(customer.locator(f"{cu_log} [data-role=agent]")).to_contain_text("signed-in agent")
        # The customer's page read it: its read event is the last of the session's channel.
        await expect(agent.locator(f"{ag_log} [data-role=agent]")).to_have_attribute("data-read", "true")

        # A reload resumes the same conversation, from the last event id the page saw.
        position = await customer.evaluate(
            "() => JSON.parse(sessionStorage.getItem('switchboard.customer')).lastEventId"
        )
        await customer.reload()
        await expect(customer.locator("#connection")).to_have_attribute("data-state", "connected")
        await expect(customer.locator("#chat-title")).to_have_text(f"Conversation {name}")
        await expect(customer.locator(f"{cu_log} [data-message-id]")).to_have_count(3)
        await say(customer, "#message", "#send", "Still here after a reload.")
        await expect(agent.locator(f"{ag_log} [data-role=customer]").last).to_contain_text("reload")
        reopened = cu_streams.of(f"/chatbot/api/sessions/{name}/events")[-1]
        assert reopened["status"] == 200 and reopened["query"] == position, cu_streams.seen
        ids = await screen_ids(customer, cu_log)
        assert ids == await screen_ids(agent, ag_log) and len(ids) == len(set(ids)) == 4, ids
    finally:
        for context in (customer_ctx, agent_ctx):
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__


async def test_a_long_queue_is_shown_a_page_at_a_time(server_process: Any, browser: Browser) -> None:
    """Past 100 waiting conversations the workbench shows the oldest 100 and "Show more" for
    the next page; one escalated meanwhile joins the end of the queue, shown once the end is."""
    server: ServerProcess = await run(server_process, "--insecure", "--no-redis", "--start-rate", "1000000")
    names = [f"wait-{index:03d}" for index in range(130)]
    async with aiohttp.ClientSession(base_url=server.url) as http:
        for name in names:
            await call(http, "POST", f"{CHATBOT}/sessions", {"session_name": name}, status=201)
            await call(http, "POST", f"{CHATBOT}/manual/escalate", {"session_name": name})
        problems = Problems()
        context, agent = await new_page(browser, problems, "agent")
        try:
            await agent.goto(f"{server.url}/console/agent.html")
            await agent.get_by_label("Agent id").fill(AGENT)
            await agent.get_by_role("button", name="Open the workbench").click()
            await expect(agent.locator("#connection")).to_have_attribute("data-state", "connected")
            await expect(agent.locator("#queue-count")).to_have_text("100+")
            await expect(agent.locator("#queue li")).to_have_count(100)
            await expect(agent.locator("#queue li").first).to_have_attribute("data-session", names[0])

            # Announced live while the end of the queue is not shown: it waits for the end.
            await call(http, "POST", f"{CHATBOT}/sessions", {"session_name": "late"}, status=201)
            await call(http, "POST", f"{CHATBOT}/manual/escalate", {"session_name": "late"})
            await agent.get_by_role("button", name="Show more").click()
            await expect(agent.locator("#queue-count")).to_have_text("131")
            shown = await agent.eval_on_selector_all(
                "#queue li", "nodes => nodes.map(n => n.dataset.session)"
            )
            assert shown == [*names, "late"], shown
            await expect(agent.get_by_role("button", name="Show more")).to_be_hidden()

            # With the whole queue shown, a new arrival is shown at once, at the end, with
            # what its transfer_request says the customer needs.
            await call(http, "POST", f"{CHATBOT}/sessions", {"session_name": "later"}, status=201)
            summary = "Charged twice for order 1234; wants a refund."
            await call(
                http, "POST", f"{CHATBOT}/manual/escalate", {"session_name": "later", "summary": summary}
            )
            await expect(agent.locator("#queue li").last).to_have_attribute("data-session", "later")
            await expect(agent.locator("#queue-count")).to_have_text("132")
            await expect(agent.locator("#queue li").last.locator(".summary")).to_have_text(summary)
        finally:
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__


async def test_the_customer_sees_the_bot_typing(
    server_process: Any, browser: Browser, tmp_path: Path
) -> None:
    """A slow bot (the example webhook bot, a real process): "The assistant is typing…" shows
    while it answers (from ephemeral ``typing`` events) and goes once its message is there."""
    with PeerProcess("examples.webhook_bot", "--pace", "0.25", log_dir=tmp_path) as bot:
        server: ServerProcess = await run(
            server_process, "--no-redis", "--bot", "webhook", "--bot-url", f"{bot.url}/bot"
        )
        problems = Problems()
        context, customer = await new_page(browser, problems, "customer")
        try:
            await customer.goto(f"{server.url}/console/customer.html")
            await customer.get_by_role("button", name="Generate").click()
            await customer.get_by_role("button", name="Start chat").click()
            await expect(customer.locator("#connection")).to_have_attribute("data-state", "connected")
            # Not say(): the page empties the field once the chat answers, after the reply.
            await customer.fill("#message", "where is my parcel?")
            await customer.click("#send")
            typing = customer.locator("#typing")
            await expect(typing).to_be_visible()
            await expect(typing).to_have_text("The assistant is typing…")
            await expect(customer.locator("#transcript [data-role=bot]")).to_contain_text(
                "Here is what I know"
            )
            await expect(typing).to_be_hidden()
        finally:
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__


async def open_workbench(
    browser: Browser, problems: Problems, base: str, agent_id: str, token: str = ""
) -> tuple[BrowserContext, Page]:
    """An agent page, signed in (with ``token`` when the server requires one), its agent
    stream live."""
    context, page = await new_page(browser, problems, agent_id)
    await page.goto(f"{base}/console/agent.html")
    await page.get_by_label("Agent id").fill(agent_id)
    if token:
        await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Open the workbench").click()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    return context, page


async def test_offers_presence_and_transfer_in_the_workbench(server_process: Any, browser: Browser) -> None:
    """Automatic assignment on two agent pages (docs/routing.md): both go online with the
    presence switch; a waiting conversation is offered, with a countdown, to the agent the rules
    pick (the most room, then the one idle longest, then by id: alice); declined, it goes to
    bob; bob lets it expire (his card goes at 0), and it comes back to alice, whose cool-off
    (--offer-timeout) is over while bob's is not; alice accepts, holds it, and transfers it to
    bob with a note, which reaches bob as an offer; bob accepts and holds it, with the note.
    Each page's load (held + offered / capacity) follows."""
    started = time.monotonic()
    server: ServerProcess = await run(
        server_process, "--insecure", "--no-redis", "--assignment", "auto", "--offer-timeout", "3"
    )
    base, name = server.url, "offered"
    summary, note = "Charged twice for order 1234.", "Refund approved; please confirm the card."
    problems = Problems()
    alice_ctx, alice = await open_workbench(browser, problems, base, "alice")
    bob_ctx, bob = await open_workbench(browser, problems, base, "bob")
    try:
        for page in (alice, bob):
            await expect(page.locator("#presence")).to_have_attribute("data-status", "offline")
            await page.get_by_role("radio", name="Online").check()
            await expect(page.locator("#presence")).to_have_attribute("data-status", "online")
            await expect(page.get_by_role("radio", name="Online")).to_be_checked()
            await expect(page.locator("#load")).to_have_text("0 / 3 conversations")
        # Each page heard the other's agent_status (the broadcast).
        await expect(alice.locator("#agents li[data-agent=bob]")).to_have_attribute("data-status", "online")
        await expect(bob.locator("#agents li[data-agent=alice]")).to_have_attribute("data-status", "online")

        async with aiohttp.ClientSession(base_url=base) as http:
            await call(http, "POST", f"{CHATBOT}/sessions", {"session_name": name}, status=201)
            body = {"session_name": name, "reason": "billing", "summary": summary}
            await call(http, "POST", f"{CHATBOT}/manual/escalate", body)

        # 1. Offered to alice (equal room, nobody assigned yet: by id), with a countdown.
        card = alice.locator(f"#offers li[data-session={name}]")
        await expect(card).to_be_visible()
        await expect(card.locator(".offer-reason")).to_have_text("billing")
        await expect(card.locator(".summary")).to_have_text(summary)
        seconds = int(await card.locator(".offer-seconds").inner_text())
        assert 1 <= seconds <= 3, seconds
        await expect(bob.locator("#offers li")).to_have_count(0)
        # She declines: the card goes, and the conversation is offered to bob.
        await card.get_by_role("button", name=f"Decline {name}").click()
        await expect(card).to_have_count(0)
        bob_card = bob.locator(f"#offers li[data-session={name}]")
        await expect(bob_card).to_be_visible()
        await expect(bob.locator("#load")).to_have_text("1 / 3 conversations")  # an offer counts
        await expect(alice.locator("#load")).to_have_text("0 / 3 conversations")

        # 2. Bob lets it expire: the countdown runs down, second by second, and the card goes.
        countdown = bob_card.locator(".offer-seconds")
        await expect(countdown).to_have_text("2")
        await expect(countdown).to_have_text("1")
        await expect(bob_card).to_have_count(0)
        await expect(bob.locator("#offers-note")).to_have_text(f"The offer of {name} expired.")
        # Offered again, to alice: her decline is an offer timeout old, bob's expiry is not.
        await expect(card).to_be_visible()
        await expect(bob.locator("#offers li")).to_have_count(0)
        await card.get_by_role("button", name=f"Accept {name}").click()
        await expect(card).to_have_count(0)
        await expect(alice.locator("#conv-status")).to_have_attribute("data-status", "agent_active")
        await expect(alice.locator("#conv-status")).to_have_attribute("data-agent", "alice")
        await expect(alice.locator(f"#mine li[data-session={name}]")).to_be_visible()
        await expect(alice.locator("#conv-summary-text")).to_have_text(summary)
        await expect(alice.locator("#load")).to_have_text("1 / 3 conversations")
        await expect(bob.locator("#load")).to_have_text("0 / 3 conversations")
        await expect(bob.locator("#agents li[data-agent=alice] .agent-load")).to_have_text("1 / 3")

        # 3. Alice transfers it to bob with a note: in auto assignment, an offer to bob.
        await expect(alice.locator("#transfer-form")).to_be_visible()
        await alice.locator("#transfer-to").select_option("bob")
        await alice.get_by_label("Note for the next agent").fill(note)
        await alice.get_by_role("button", name="Transfer", exact=True).click()
        await expect(alice.locator("#conv-status")).to_have_attribute("data-status", "waiting_agent")
        await expect(alice.locator("#transfer-form")).to_be_hidden()
        await expect(alice.locator(f"#mine li[data-session={name}]")).to_have_count(0)
        bob_card = bob.locator(f"#offers li[data-session={name}]")
        await expect(bob_card.locator(".summary")).to_have_text(note)
        await expect(bob_card.locator(".offer-reason")).to_have_text("transfer")
        await bob_card.get_by_role("button", name=f"Accept {name}").click()
        await expect(bob_card).to_have_count(0)
        await expect(bob.locator("#conv-status")).to_have_attribute("data-status", "agent_active")
        await expect(bob.locator("#conv-status")).to_have_attribute("data-agent", "bob")
        await expect(bob.locator("#conv-summary-text")).to_have_text(note)
        await expect(bob.locator(f"#mine li[data-session={name}]")).to_be_visible()
        await expect(bob.locator("#load")).to_have_text("1 / 3 conversations")
        await expect(alice.locator("#load")).to_have_text("0 / 3 conversations")
        await expect(alice.locator("#conv-status")).to_have_text("Held by bob.")
        for page in (alice, bob):
            await expect(page.locator("#error")).to_be_hidden()
    finally:
        for context in (alice_ctx, bob_ctx):
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__
    assert time.monotonic() - started < 40


async def open_customer(
    browser: Browser, problems: Problems, base: str, name: str
) -> tuple[BrowserContext, Page]:
    """A customer page with the conversation ``name`` started, its stream live."""
    context, page = await new_page(browser, problems, f"customer {name}")
    await page.goto(f"{base}/console/customer.html")
    await page.get_by_label("Conversation name").fill(name)
    await page.get_by_role("button", name="Start chat").click()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    return context, page


async def hand_over(customer: Page, agent: Page, name: str) -> None:
    """The customer asks for a human; the agent takes the conversation over from the queue."""
    await customer.get_by_role("button", name="Talk to a human").click()
    await agent.locator(f"#queue li[data-session={name}]").get_by_role("button", name="Take over").click()
    await expect(agent.locator("#conv-status")).to_have_attribute("data-status", "agent_active")
    await expect(customer.locator("#status")).to_have_attribute("data-status", "agent_active")


async def session_state(base: str, name: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=base) as http:
        return await call_json(http, "GET", f"{WORKBENCH}/sessions/{name}")


async def test_typing_both_ways_and_private_notes(server_process: Any, browser: Browser) -> None:
    """Each side sees the other typing (moving dots), never its own side: until the typist's
    message arrives, or 5 s after the last ``typing``. A note written on the agent page shows
    there as an internal note with its author, set apart from the messages, and never reaches
    the customer's page, live or from the transcript after a reload."""
    server: ServerProcess = await run(server_process, "--insecure", "--no-redis")
    base, name = server.url, "typing-notes"
    problems = Problems()
    customer_ctx, customer = await open_customer(browser, problems, base, name)
    agent_ctx, agent = await open_workbench(browser, problems, base, AGENT)
    cu_typing, ag_typing = customer.locator("#typing"), agent.locator("#conv-typing")
    cu_log, ag_log = "#transcript", "#conv-transcript"
    try:
        await hand_over(customer, agent, name)

        # The customer types: the agent sees it, with the dots; the customer's page does not.
        await customer.locator("#message").press_sequentially("Where is my", delay=20)
        await expect(ag_typing).to_be_visible()
        await expect(ag_typing).to_have_text("The customer is typing…")
        await expect(ag_typing.locator(".dots span")).to_have_count(3)
        await expect(cu_typing).to_be_hidden()
        # The message ends it at once, not 5 s after the typing.
        await customer.locator("#message").press_sequentially(" parcel?")
        await customer.click("#send")
        await expect(agent.locator(f"{ag_log} [data-role=customer]")).to_have_text(re.compile("parcel"))
        await expect(ag_typing).to_be_hidden(timeout=3000)

        # The agent types: the customer sees it; it ends 5 s after the last typing, message or not.
        await agent.locator("#reply").press_sequentially("Let me check", delay=20)
        await expect(cu_typing).to_be_visible()
        shown = time.monotonic()
        await expect(cu_typing).to_have_text("The agent is typing…")
        await expect(ag_typing).to_be_hidden()

        # A note, meanwhile (the reply field keeps its draft).
        note = "VIP customer: refund without asking for the receipt."
        await say(agent, "#note", "#note-send", note)
        noted = agent.locator(f"{ag_log} [data-role=note]")
        await expect(noted).to_have_count(1)
        await expect(noted).to_have_class(re.compile(r"\bmsg-note\b"))
        await expect(noted.locator(".msg-who")).to_have_text("Internal note · You")
        await expect(noted.locator(".msg-text")).to_have_text(note)
        await expect(agent.locator(f"{ag_log} [data-local]")).to_have_count(0)  # its note event came

        await expect(cu_typing).to_be_hidden()
        assert time.monotonic() - shown > 4, "the typing went before its 5 s"
        await agent.click("#send")  # the draft, after the note
        await expect(customer.locator(f"{cu_log} [data-role=agent]")).to_have_text(re.compile("Let me check"))
        bubbles = await agent.eval_on_selector_all(
            f"{ag_log} [data-message-id]",
            "nodes => nodes.map(n => [n.dataset.role, getComputedStyle(n).backgroundColor])",
        )
        colours = dict(bubbles)
        assert list(colours) == ["customer", "note", "agent"], bubbles
        assert colours["note"] not in {colours["customer"], colours["agent"]}, bubbles

        # The customer's page never shows it: live (the agent's reply, sent after it, is
        # there), nor from the transcript after a reload.
        for reload in (False, True):
            if reload:
                await customer.reload()
                await expect(customer.locator("#connection")).to_have_attribute("data-state", "connected")
                await expect(customer.locator(f"{cu_log} [data-message-id]")).to_have_count(2)
            assert note not in await customer.locator("body").inner_text()
            await expect(customer.locator(f"{cu_log} [data-role=note]")).to_have_count(0)
        assert [m["role"] for m in await server_transcript(base, name)] == ["customer", "agent"]
    finally:
        for context in (customer_ctx, agent_ctx):
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__


async def test_read_marks_both_ways_and_unread_counts(server_process: Any, browser: Browser) -> None:
    """Read receipts on screen: the customer's messages are marked read on the customer's page
    once the agent's page has shown them, and the agent's once the customer's has; the agent's
    list counts a held conversation's unread customer messages (the server's count: a reload
    shows it too) until the agent opens it."""
    server: ServerProcess = await run(server_process, "--insecure", "--no-redis")
    base, name, other = server.url, "reads", "reads-other"
    problems = Problems()
    customer_ctx, customer = await open_customer(browser, problems, base, name)
    agent_ctx, agent = await open_workbench(browser, problems, base, AGENT)
    cu_log, ag_log = "#transcript", "#conv-transcript"
    mine = agent.locator(f"#mine li[data-session={name}]")
    try:
        await say(customer, "#message", "#send", "Hello")
        await expect(customer.locator(f"{cu_log} [data-role=bot]")).to_have_count(1)
        hello = customer.locator(f"{cu_log} [data-role=customer]")
        await expect(hello).not_to_have_attribute("data-read", "true")  # the bot reads nothing

        # Taken over, the conversation is on the agent's screen: the customer's page says so.
        await hand_over(customer, agent, name)
        await expect(hello).to_have_attribute("data-read", "true")
        await expect(hello.locator(".msg-read")).to_have_text("Read")
        await expect(mine).to_have_attribute("data-unread", "0")
        # The agent's message, once on the customer's screen, is marked read on the agent's.
        await say(agent, "#reply", "#send", "Hi, I am Alice.")
        answer = agent.locator(f"{ag_log} [data-role=agent]")
        await expect(answer).to_have_attribute("data-read", "true")
        await expect(answer.locator(".msg-read")).to_have_text("Read")
        await expect(agent.locator(f"{ag_log} [data-role=bot]")).not_to_have_attribute("data-read", "true")
        ids = await screen_ids(agent, ag_log)
        state = await session_state(base, name)
        assert state["read"] == {"agent": ids[0], "customer": ids[2]} and state["unread"] == 0, state

        # Another conversation open on the agent's page: the customer writes twice, unread.
        async with aiohttp.ClientSession(base_url=base) as http:
            await call(http, "POST", f"{CHATBOT}/sessions", {"session_name": other}, status=201)
            await call(http, "POST", f"{CHATBOT}/manual/escalate", {"session_name": other})
        waiting = agent.locator(f"#queue li[data-session={other}]")
        await waiting.get_by_role("button", name="Take over").click()
        await expect(agent.locator("#conv-title")).to_have_text(f"Conversation {other}")
        await say(customer, "#message", "#send", "My order is late.")
        await say(customer, "#message", "#send", "Order 1234.")
        await expect(mine).to_have_attribute("data-unread", "2")
        await expect(mine).to_have_text(f"{name} (2 new)")
        await expect(customer.locator(f"{cu_log} [data-role=customer][data-read]")).to_have_count(1)
        # The count is the server's: a reloaded page shows it again.
        await agent.reload()
        await expect(agent.locator("#conv-connection")).to_have_attribute("data-state", "connected")
        await expect(mine).to_have_attribute("data-unread", "2")
        assert (await session_state(base, name))["unread"] == 2

        # Opened, it is read: the count clears, and the customer's page marks both.
        await mine.get_by_role("button").click()
        await expect(agent.locator(f"{ag_log} [data-role=customer]")).to_have_count(3)
        await expect(mine).to_have_attribute("data-unread", "0")
        await expect(mine).to_have_text(name)
        await expect(customer.locator(f"{cu_log} [data-role=customer][data-read]")).to_have_count(3)
        assert (await session_state(base, name))["unread"] == 0
    finally:
        for context in (customer_ctx, agent_ctx):
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__


@pytest.fixture
def rating_endpoint() -> None:
    """Skips a test while the chatbot side has no ``POST /api/sessions/{session_name}/rating``
    (the satisfaction rating, built on its own branch: the console codes against its contract);
    a fixture, so that it skips before the browser starts."""
    if not any(
        isinstance(route, web.RouteDef)
        and route.method == "POST"
        and route.path == "/api/sessions/{session_name}/rating"
        for route in chatbot_routes
    ):
        pytest.skip("rating endpoint not merged yet")


async def test_rating_after_the_close(rating_endpoint: None, server_process: Any, browser: Browser) -> None:
    """Once the agent closes the conversation the customer's page asks for a rating: 4 stars
    and a comment, sent, say "Thanks" (and so does the customer's other tab, from the
    ``rating`` event), and the agent's page shows the rating. A reload still says "Thanks"."""
    server: ServerProcess = await run(server_process, "--insecure", "--no-redis")
    base, name = server.url, "rated"
    comment = "Quick and helpful."
    problems = Problems()
    customer_ctx, customer = await open_customer(browser, problems, base, name)
    agent_ctx, agent = await open_workbench(browser, problems, base, AGENT)
    # The customer's second tab on the same conversation: its own window (a background tab is
    # hidden, and Chromium slows a hidden page down), given what the first tab keeps.
    saved = await customer.evaluate("() => sessionStorage.getItem('switchboard.customer')")
    second_ctx, second = await new_page(browser, problems, "customer's second tab")
    await second.goto(f"{base}/console/customer.html")
    await second.evaluate("saved => sessionStorage.setItem('switchboard.customer', saved)", saved)
    await second.reload()
    await expect(second.locator("#connection")).to_have_attribute("data-state", "connected")
    prompt = customer.locator("#rating")
    try:
        await hand_over(customer, agent, name)
        await say(agent, "#reply", "#send", "Your refund is on its way.")
        await expect(prompt).to_be_hidden()  # not before the close

        await agent.get_by_role("button", name="Close").click()
        await expect(customer.locator("#status")).to_have_attribute("data-status", "closed")
        for page in (customer, second):
            await expect(page.locator("#rating-form")).to_be_visible()
            await expect(page.get_by_role("button", name="Send rating")).to_be_disabled()
        await customer.get_by_role("button", name="4 stars").click()
        await expect(customer.locator("#stars .star.on")).to_have_count(4)
        await expect(customer.get_by_role("button", name="4 stars")).to_have_attribute("aria-pressed", "true")
        await customer.get_by_label("Comment").fill(comment)
        await customer.get_by_role("button", name="Send rating").click()

        for page in (customer, second):
            await expect(page.locator("#rating-thanks")).to_have_text("Thanks for your feedback: 4 of 5.")
            await expect(page.locator("#rating-form")).to_be_hidden()
        shown = agent.locator("#conv-rating")
        await expect(shown).to_be_visible()
        await expect(shown).to_have_attribute("data-score", "4")
        await expect(shown).to_contain_text(f"rated this conversation 4 of 5: “{comment}”")
        rating = (await session_state(base, name))["rating"]
        assert rating["score"] == 4 and rating["comment"] == comment, rating

        # Rated once: a reloaded page says "Thanks" from the session, without a prompt.
        await customer.reload()
        await expect(customer.locator("#rating-thanks")).to_have_text("Thanks for your feedback: 4 of 5.")
        await expect(customer.locator("#rating-form")).to_be_hidden()
    finally:
        for context in (customer_ctx, second_ctx, agent_ctx):
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__


async def open_supervisor(
    browser: Browser, problems: Problems, base: str, supervisor_id: str, token: str = ""
) -> tuple[BrowserContext, Page]:
    """The supervisor page, signed in, its supervisor stream live."""
    context, page = await new_page(browser, problems, f"supervisor {supervisor_id}")
    await page.goto(f"{base}/console/supervisor.html")
    await page.get_by_label("Supervisor id").fill(supervisor_id)
    if token:
        await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Open the board").click()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    return context, page


async def test_the_supervisor_listens_whispers_and_barges_in(
    server_process: Any, browser: Browser, screenshots: Path
) -> None:
    """Under authentication (a supervisor token): the supervisor page lists the conversation as
    it is escalated and taken over, listens to it live, whispers to alice (her page shows it,
    the customer's never does), and barges in: alice is told and loses it, the customer sees the
    supervisor join, and the supervisor's answer reaches the customer."""
    secret = secrets.token_urlsafe(32)
    server: ServerProcess = await run(
        server_process, "--no-redis", env={"SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": secret}
    )
    base, name = server.url, "supervised"
    authority = TokenAuthority(secret)
    problems = Problems()
    sup_ctx, sup = await open_supervisor(
        browser, problems, base, "", authority.mint("supervisor", "sue", 600)
    )
    customer_ctx, customer = await open_customer(browser, problems, base, name)
    agent_ctx, agent = await open_workbench(
        browser, problems, base, AGENT, authority.mint("agent", AGENT, 600)
    )
    row = sup.locator(f"#board-list li[data-session={name}]")
    sup_log, cu_log = "#conv-transcript", "#transcript"
    whispered = "Offer the free shipping voucher."
    try:
        await expect(sup.locator("#whoami")).to_have_text("sue")  # read from the token
        await hand_over(customer, agent, name)
        await expect(row).to_have_attribute("data-agent", AGENT)
        await row.get_by_role("button", name=f"Listen to {name}").click()
        await expect(sup.locator("#conv-status")).to_have_attribute("data-agent", AGENT)

        # Listening, live: the customer's message and alice's answer.
        await say(customer, "#message", "#send", "My parcel never came.")
        await say(agent, "#reply", "#send", "Let me look at it.")
        await expect(sup.locator(f"{sup_log} [data-role=customer]").last).to_have_text(re.compile("parcel"))
        await expect(sup.locator(f"{sup_log} [data-role=agent]").last).to_have_text(re.compile("look at it"))

        # A whisper: alice's page has it, the activity log too; the customer's page never.
        await say(sup, "#whisper", "#whisper-send", whispered)
        await expect(agent.locator("#supervisor-note")).to_have_text(re.compile(whispered))
        await expect(agent.locator("#conv-transcript [data-notice=whisper]")).to_have_text(
            re.compile(whispered)
        )
        await expect(sup.locator("#activity [data-kind=whisper]")).to_have_text(re.compile(whispered))

        # Barging in: alice is told and loses it; the customer sees the supervisor join.
        await sup.click("#barge")
        await expect(sup.locator("#conv-status")).to_have_attribute("data-agent", "sue")
        await expect(agent.locator("#supervisor-note")).to_have_text(re.compile("took the conversation over"))
        await expect(agent.locator(f"#mine li[data-session={name}]")).to_have_count(0)
        await expect(customer.locator(f"{cu_log} [data-role=bot]").last).to_have_text(
            re.compile("supervisor")
        )
        await expect(sup.locator("#activity [data-kind=barge]")).to_have_count(1)
        await say(sup, "#reply", "#send", "I'm the team lead: a new parcel leaves today.")
        await expect(customer.locator(f"{cu_log} [data-role=agent]").last).to_have_text(
            re.compile("team lead")
        )
        await shoot(sup, screenshots, "console-supervisor")
        assert whispered not in await customer.locator("body").inner_text()
        assert (await sup.locator(f"{sup_log} [data-notice=whisper]").count()) == 0  # not in a transcript
    finally:
        for context in (sup_ctx, customer_ctx, agent_ctx):
            await context.close()
    assert not problems.errors and not problems.network, problems.__dict__
