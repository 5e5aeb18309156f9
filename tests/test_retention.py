"""Bounds on what the server keeps (docs/security.md, "Bounds"): idle bot conversations close,
closed ones are deleted past retention, every key expires, transcripts and channel histories
keep within their bytes, the waiting queue has a cap, and a conversation started again under an
old name refuses the old tokens and ends the old streams. Against real Redis (and the memory
backend where the bound exists there too)."""

import json
from typing import cast

import aiohttp
import pytest
from redis.asyncio import Redis

from app.domain.auth import TokenAuthority
from app.domain.store import MemorySessionStore, RedisSessionStore, SessionStore
from app.domain.store.base import Bounds
from app.keys import BACKENDS
from app.process.settings import Settings
from handlers.bot_reply import QUEUE_FULL_NOTICE
from realtime.channels import session_channel
from realtime.events import envelope
from realtime.memory_broker import MemoryBroker
from realtime.redis_broker import RedisBroker
from tests.support.api import (
    CHATBOT,
    act,
    agent_events,
    agent_say,
    bearer,
    call,
    chat,
    create,
    escalate,
    session_events,
)
from tests.support.app_server import MakeClient
from tests.support.metrics import scrape, value
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import open_stream

SECRET = "retention-test-secret-0123456789-abcdefghij"
EMOJI = "\U0001f600"  # 4 bytes of UTF-8


async def test_idle_conversations_close_and_closed_ones_are_deleted(
    make_client: MakeClient, settings: Settings, backend: str
) -> None:
    """A bot conversation idle past --idle-ttl is closed (announced from ``system`` on its
    stream and the agents'); a closed one is deleted past --retention, its stream ended, its
    keys and index entries gone. A conversation waiting for an agent is not closed for idling
    (on Redis its keys expire only after idle time and retention without a touch)."""
    client = await make_client(settings, idle_ttl=1.0, retention=1.5, heartbeat=0.3)
    for name in ("idle", "waiting"):
        await create(client, name)
    await escalate(client, "waiting")
    async with (
        open_stream(client, session_events("idle")) as (on_session, _),
        open_stream(client, agent_events("a1")) as (on_agents, _),
    ):
        closed = (await on_session.take(1, timeout=5.0))[0].data
        assert closed["type"] == "status_change" and closed["source"] == "system", closed
        assert (
            closed["payload"]["status"] == "closed" and closed["payload"]["previous_status"] == "bot_active"
        )
        told = (await on_agents.take(1, timeout=5.0))[0].data
        assert told["payload"] == closed["payload"], told
        assert (await call(client, "GET", f"{CHATBOT}/sessions/waiting"))["status"] == "waiting_agent"
        # Deleted past retention: the stream ends, and its client's reconnect finds nothing.
        await on_session.read_to_end(timeout=5.0)
    await call(client, "GET", f"{CHATBOT}/sessions/idle", status=404)
    if backend == "redis":
        store = client.app[BACKENDS].store
        assert isinstance(store, RedisSessionStore)
        redis = Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            assert not await redis.keys("*{idle}*")
            for status in ("bot_active", "closed"):
                assert await redis.zscore(store.keys.status(status), "idle") is None
        finally:
            await redis.aclose()
    samples = await scrape(client)
    assert (value(samples, "switchboard_sessions_closed_idle_total") or 0) >= 1
    assert (value(samples, "switchboard_sessions_expired_total") or 0) >= 1


async def test_every_key_expires(make_client: MakeClient, redis_url: str, redis: Redis) -> None:
    """After a whole conversation (start, bot, hand-off, agent, close) on Redis, every key the
    server wrote has an expiry: sessions, transcripts, indexes, clocks, histories, sizes."""
    await redis.flushall()
    client = await make_client(Settings(port=0, redis_url=redis_url, insecure=True))
    await create(client, "whole")
    await chat(client, "whole", "hello")
    await escalate(client, "whole")
    await act(client, "whole", "takeover", "a1")
    await agent_say(client, "whole", "a1", "hi, this is a person")
    await act(client, "whole", "close", "a1")
    keys = await redis.keys("*")
    assert len(keys) >= 10, keys
    forever = [key for key in keys if await redis.pttl(key) < 0]
    assert not forever, f"keys without an expiry: {forever}"


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_transcripts_keep_their_newest_messages_within_their_bytes(kind: str, redis_url: str) -> None:
    """40 messages of 4,000 emoji (16 KB each) into a transcript bounded at 64 KiB: it keeps
    the newest that fit, oldest first; on Redis its size counter is what the list holds."""
    bounds = Bounds(transcript_bytes=64 * 1024)
    client = Redis.from_url(redis_url)
    store: SessionStore = (
        MemorySessionStore(bounds) if kind == "memory" else RedisSessionStore(client, bounds=bounds)
    )
    try:
        await store.create("big")
        for i in range(40):
            await store.add_message("big", "customer", f"{i:02d}" + EMOJI * 3998)
        kept = (await store.messages("big", limit=1000)).items
        sizes = [len(json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode()) for m in kept]
        assert 1 < len(kept) < 40 and sum(sizes) <= bounds.transcript_bytes, (len(kept), sum(sizes))
        assert [m["content"][:2] for m in kept] == [f"{i:02d}" for i in range(40 - len(kept), 40)]
        if isinstance(store, RedisSessionStore):
            raws = await client.lrange(store.keys.messages("big"), 0, -1)
            assert int(await client.get(store.keys.transcript_size("big")) or 0) == sum(map(len, raws))
    finally:
        await store.close()
        await client.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_channel_histories_keep_within_their_bytes(kind: str, redis_url: str, redis: Redis) -> None:
    """Events of 16 KB into a history bounded at 64 KiB: it keeps the newest that fit (a
    resume from before them says ``recovered: false``), and on Redis the stream and its size
    counter agree."""
    await redis.flushall()
    limit = 64 * 1024
    client = Redis.from_url(redis_url)
    broker = (
        MemoryBroker(history_bytes=limit) if kind == "memory" else RedisBroker(client, history_bytes=limit)
    )
    if isinstance(broker, RedisBroker):
        assert await broker.start(wait=2.0)
    channel = session_channel("loud")
    try:
        first = ""
        for i in range(20):
            message = {
                "id": f"{i:016x}",
                "role": "customer",
                "content": EMOJI * 4000,
                "agent_id": None,
                "created_at": 1,
            }
            event_id = await broker.publish(
                channel, envelope("new_message", {"session_name": "loud", "message": message}, "ai_chatbot")
            )
            first = first or event_id
        async with broker.subscribe(channel, resume_from=first) as subscription:
            assert not subscription.recovered
        if kind == "redis":
            history = f"history:{channel}"
            entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(history))  # a decoding client
            stored = sum(len(fields["d"].encode()) for _, fields in entries)
            assert 1 < len(entries) < 20 and stored <= limit, (len(entries), stored)
            assert int(await redis.get(history + "#bytes") or 0) == stored
            assert await redis.pttl(history) > 0 and await redis.pttl(history + "#bytes") > 0
    finally:
        await broker.close()
        await client.aclose()


async def test_escalations_past_max_waiting_are_refused(make_client: MakeClient, settings: Settings) -> None:
    """--max-waiting 2: a third escalation is refused 409 queue_full and changes nothing; a
    customer whose words would make the bot hand over hears that every agent is busy and stays
    with the bot. Both refusals are counted."""
    client = await make_client(settings, max_waiting=2)
    for name in ("w1", "w2", "third", "asks"):
        await create(client, name)
    for name in ("w1", "w2"):
        await escalate(client, name)
    refused = await call(client, "POST", f"{CHATBOT}/manual/escalate", {"session_name": "third"}, status=409)
    assert refused["error"]["code"] == "queue_full", refused
    assert (await call(client, "GET", f"{CHATBOT}/sessions/third"))["status"] == "bot_active"
    answer = await chat(client, "asks", "I want to talk to a human")
    assert answer["session"]["status"] == "bot_active", answer
    assert answer["reply"]["content"].endswith(QUEUE_FULL_NOTICE), answer["reply"]
    samples = await scrape(client)
    assert value(samples, "switchboard_escalations_refused_total", reason="queue_full") == 2


async def test_a_conversation_started_again_refuses_the_old_tokens(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    """Redis loses its data (FLUSHALL, no restart) under an open stream; the stream ends within
    a heartbeat and its reconnect gets 404. Another client starts a conversation under the same
    name: the first customer's token is refused (401) on every endpoint, the new one works."""
    secure = {**REDIS_ON, "SWITCHBOARD_INSECURE": "false"}
    process = server_process("--redis-url", redis_url, "--secret", SECRET, "--heartbeat", "0.5", env=secure)
    base, name = process.url, "reborn"
    agent = bearer(TokenAuthority(SECRET).mint("agent", "a1", 600))
    async with aiohttp.ClientSession() as http:
        old = bearer((await create(http, name, base=base))["token"])
        await chat(http, name, "hello", base=base, headers=old)
        async with open_stream(http, base + session_events(name), headers=old) as (stream, _):
            await redis.flushall()
            await stream.read_to_end(timeout=5.0)
        await call(http, "GET", base + session_events(name), status=404, headers=old)

        new = bearer((await create(http, name, base=base))["token"])
        for method, path, body in (
            ("POST", f"{CHATBOT}/chat", {"session_name": name, "content": "it's me"}),
            ("POST", f"{CHATBOT}/manual/escalate", {"session_name": name}),
            ("GET", f"{CHATBOT}/sessions/{name}", None),
            ("GET", f"{CHATBOT}/sessions/{name}/messages", None),
            ("GET", session_events(name), None),
        ):
            refused = await call(http, method, base + path, body, status=401, headers=old)
            assert refused["error"]["code"] == "unauthorized", (path, refused)
        assert (await call(http, "GET", f"{base}/workbench/api/sessions/{name}", headers=agent))[
            "status"
        ] == "bot_active"
        assert (await chat(http, name, "hello again", base=base, headers=new))["session"][
            "status"
        ] == "bot_active"
