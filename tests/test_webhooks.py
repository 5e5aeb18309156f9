"""Outbound webhooks (docs/webhooks.md) with a real receiver process: every lifecycle change of
a conversation is delivered at least once, signed, with an idempotency key that every try
shares; a receiver that fails at first gets each event again after a backoff; a server killed
mid-delivery and started again delivers what it had taken; an event no try gets through goes
to the dead letters. Real redis-server and server processes; the memory mode in the test."""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from app.process.settings import Settings
from app.web.signing import SIGNATURE_HEADER, verify
from app.webhooks.delivery import group_of
from tests.support.api import act, chat, create
from tests.support.app_server import MakeClient
from tests.support.metrics import by_label, scrape
from tests.support.processes import MANY_STARTS, PeerProcess, ServerProcess
from tests.support.redis_server import RedisServer
from tests.support.wait import until

SECRET = "w" * 40
LIFECYCLE = [
    "conversation.started",
    "conversation.escalated",
    "conversation.assigned",
    "conversation.released",
    "conversation.closed",
]
DELIVERED = 30.0  # seconds every event may take to arrive (retries included)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[PeerProcess]:
    with PeerProcess("tests.support.webhook_receiver", "--fail-first", "2", log_dir=tmp_path) as process:
        yield process


async def calls(receiver: PeerProcess) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{receiver.url}/_received") as answer:
        found: list[dict[str, Any]] = await answer.json()
        return found


async def fail_next(receiver: PeerProcess, count: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{receiver.url}/_fail", json={"count": count}) as answer,
    ):
        assert answer.status == 200


def events_of(received: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The events by id (a retried one once), each checked: signed, its id in the header."""
    events: dict[str, dict[str, Any]] = {}
    for call in received:
        body = call["body"].encode()
        verify([SECRET.encode()], body, call["headers"][SIGNATURE_HEADER], time.time())
        event = json.loads(body)
        assert call["headers"]["Switchboard-Event-Id"] == event["id"]
        assert events.get(event["id"], event) == event, "a retry must send the same event"
        events[event["id"]] = event
    return events


def webhook_flags(receiver: PeerProcess, *more: str) -> tuple[str, ...]:
    return ("--webhook-url", f"{receiver.url}/hook", "--webhook-secret", SECRET, *MANY_STARTS, *more)


async def converse(http: Any, name: str, base: str = "") -> None:
    await create(http, name, base=base)
    await chat(http, name, "a human please", base=base)
    await act(http, name, "takeover", "agent-1", base=base)
    await act(http, name, "release", "agent-1", base=base)
    await act(http, name, "close", "agent-1", base=base)


async def test_every_lifecycle_change_reaches_the_receiver(
    redis_server: RedisServer, server_process: Callable[..., ServerProcess], receiver: PeerProcess
) -> None:
    server = server_process(*webhook_flags(receiver), env={"REDIS_URL": redis_server.url})
    async with aiohttp.ClientSession() as http:
        await converse(http, "wh-life", server.url)
    received = await until(lambda: calls(receiver), lambda c: len(events_of(c)) >= 5, timeout=DELIVERED)
    events = events_of(received)
    assert [e["type"] for e in events.values()] == LIFECYCLE
    assert all(e["session"]["session_name"] == "wh-life" for e in events.values())
    escalated, closed = list(events.values())[1], list(events.values())[4]
    assert escalated["session"]["escalation_reason"] == "customer asked for a human"
    assert [m["role"] for m in closed["transcript"]] == ["customer", "bot"]
    # The first event failed twice: three tries, numbered, one id.
    first_id = next(iter(events))
    first = [c for c in received if c["headers"]["Switchboard-Event-Id"] == first_id]
    assert [c["headers"]["Switchboard-Delivery-Attempt"] for c in first] == ["1", "2", "3"]
    async with aiohttp.ClientSession() as http:
        results = by_label(await scrape(http, server.url), "switchboard_webhook_deliveries_total", "result")
    assert results == {"delivered": 5.0, "retried": 2.0}


async def test_a_server_killed_mid_delivery_delivers_after_its_restart(
    redis_server: RedisServer, server_process: Callable[..., ServerProcess], receiver: PeerProcess
) -> None:
    await fail_next(receiver, 1000)
    server = server_process(*webhook_flags(receiver), env={"REDIS_URL": redis_server.url})
    async with aiohttp.ClientSession() as http:
        for n in range(3):
            await create(http, f"wh-kill-{n}", base=server.url)
    await until(lambda: calls(receiver), lambda c: len(c) >= 1, timeout=DELIVERED)
    server.kill()  # mid-delivery: what it took is pending in Redis, not lost with it
    await fail_next(receiver, 0)
    server.start()
    received = await until(lambda: calls(receiver), lambda c: len(events_of(c)) >= 3, timeout=DELIVERED)
    names = sorted(e["session"]["session_name"] for e in events_of(received).values())
    assert names == ["wh-kill-0", "wh-kill-1", "wh-kill-2"]


async def test_an_event_no_try_gets_through_goes_to_the_dead_letters(
    redis_server: RedisServer, server_process: Callable[..., ServerProcess], receiver: PeerProcess
) -> None:
    await fail_next(receiver, 1000)
    flags = webhook_flags(receiver, "--webhook-attempts", "2")
    server = server_process(*flags, env={"REDIS_URL": redis_server.url})
    async with aiohttp.ClientSession() as http:
        await create(http, "wh-dead", base=server.url)
        results = await until(
            lambda: scrape(http, server.url),
            lambda s: by_label(s, "switchboard_webhook_deliveries_total", "result").get("dead") == 1.0,
            timeout=DELIVERED,
        )
    assert by_label(results, "switchboard_webhook_deliveries_total", "result") == {
        "retried": 1.0,
        "dead": 1.0,
    }
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        [letter] = await redis.lrange(
            f"history:queue:webhooks#dead:{group_of(f'{receiver.url}/hook')}", 0, -1
        )
        assert await redis.ttl(f"history:queue:webhooks#dead:{group_of(f'{receiver.url}/hook')}") > 0
    finally:
        await redis.aclose()
    dead = json.loads(letter)
    assert dead["tries"] == 2 and dead["error"] == "HTTP 500"
    assert dead["event"]["type"] == "conversation.started"


async def test_memory_mode_delivers_too(make_client: MakeClient, receiver: PeerProcess) -> None:
    client = await make_client(
        Settings(port=0, use_redis=False, insecure=True),
        webhook_urls=(f"{receiver.url}/hook",),
        webhook_secret=SECRET,
    )
    await converse(client, "wh-memory")
    received = await until(lambda: calls(receiver), lambda c: len(events_of(c)) >= 5, timeout=DELIVERED)
    assert [e["type"] for e in events_of(received).values()] == LIFECYCLE


async def test_on_a_redis_cluster_too(
    cluster_url: str, server_process: Callable[..., ServerProcess], receiver: PeerProcess
) -> None:
    """On a cluster a conversation's script cannot reach the queue's slot: its entries travel
    through the session's outbox (realtime.session_outbox), and arrive once each."""
    server = server_process(*webhook_flags(receiver), env={"REDIS_URL": cluster_url})
    async with aiohttp.ClientSession() as http:
        await converse(http, "wh-cluster", server.url)
    received = await until(lambda: calls(receiver), lambda c: len(events_of(c)) >= 5, timeout=DELIVERED)
    assert [e["type"] for e in events_of(received).values()] == LIFECYCLE
