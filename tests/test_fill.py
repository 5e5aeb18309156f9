"""A fill from one address, as the probe did it (docs/security.md, "Bounds"): one client
starts conversations as fast as it can, floods each with the largest messages the API takes and
asks for a human, against a real secure server process on a real Redis. The bounds hold: starts
and escalations stay within --start-rate, no answer is a 5xx, every key expires, every transcript
and history keeps within its bytes, and Redis grows by no more than what the bounds allow for
the conversations the limit let through, however much was posted.

The suite fills for 20 s: the bounds bind within seconds (a conversation reaches its transcript
bound after 32 of these messages) and the start rate's burst is spent at once, so a longer fill
only repeats it. ``SWITCHBOARD_FILL_SECONDS=60`` replays the probe's minute. The figures are
logged (``pytest -o log_cli=true -o log_cli_level=INFO tests/test_fill.py``); docs/security.md
quotes a minute's run."""

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import aiohttp
from redis.asyncio import Redis

from app.domain.auth import TokenAuthority
from app.domain.store.base import Bounds
from app.process.settings import Settings
from realtime.channels import PATTERN_HISTORY_FACTOR
from tests.support.api import CHATBOT, WORKBENCH, bearer, every_page, send
from tests.support.processes import REDIS_ON, StartServer

logger = logging.getLogger(__name__)

SECRET = "fill-test-secret-0123456789-abcdefghijklmn"
FILL_SECONDS = float(os.environ.get("SWITCHBOARD_FILL_SECONDS", "20"))
STARTERS = 4  # concurrent start loops
CONNECTIONS = 64  # the client's connection pool: one address, many sockets
BIG = "\U0001f600" * 4000  # the largest content the API takes: 4,000 characters, 16 KB of UTF-8
ASK_EVERY = 10  # every tenth message asks the bot for a human
SAMPLE_EVERY = 5.0  # seconds between memory samples
# Redis's allocator (jemalloc) rounds each value up to its size class: a 16.2 KB event takes 20 KiB.
ALLOCATOR = 1.25
# What Redis keeps per conversation past the bytes the bounds count: the session, index entries,
# the stream and list nodes.
PER_CONVERSATION_OVERHEAD = 64 * 1024
SLACK = 4 * 1024 * 1024  # buffers and fragmentation of a Redis under load


@dataclass
class Fill:
    """What the client did, and what the server answered."""

    started: list[tuple[str, str]] = field(default_factory=list)  # (name, token)
    answers: Counter[str] = field(default_factory=Counter)  # "start 201", "chat 429", ...
    posted_bytes: int = 0  # content of the messages answered 200
    memory: list[tuple[float, int]] = field(default_factory=list)  # (second, used_memory)


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def chatter(http: aiohttp.ClientSession, base: str, name: str, token: str, fill: Fill) -> None:
    """Post the largest messages into one conversation as fast as the server answers."""
    headers = bearer(token)
    for sent in range(1_000_000):  # ended by cancellation at the deadline
        content = "I want a human" if sent % ASK_EVERY == ASK_EVERY - 1 else BIG
        reply = await send(
            http, "POST", f"{base}{CHATBOT}/chat", {"session_name": name, "content": content}, headers=headers
        )
        fill.answers[f"chat {reply.status}"] += 1
        if reply.status == 200:
            fill.posted_bytes += len(content.encode())
        elif reply.status == 429:
            await asyncio.sleep(0.05)  # a flood still has to wait for its next token


async def starter(
    http: aiohttp.ClientSession, base: str, fill: Fill, chatters: list["asyncio.Task[None]"]
) -> None:
    """Start conversations without pause; each one started gets a chatter."""
    for _ in range(1_000_000):  # ended by cancellation at the deadline
        reply = await send(http, "POST", f"{base}{CHATBOT}/sessions", {})
        fill.answers[f"start {reply.status}"] += 1
        if reply.status == 201:
            name, token = reply.body["session_name"], reply.body["token"]
            fill.started.append((name, token))
            chatters.append(asyncio.create_task(chatter(http, base, name, token, fill)))


async def sampler(redis: Redis, fill: Fill, began: float) -> None:
    for _ in range(1_000_000):  # ended by cancellation at the deadline
        fill.memory.append((time.monotonic() - began, await used_memory(redis)))
        await asyncio.sleep(SAMPLE_EVERY)


async def test_filling_from_one_address_leaves_redis_bounded(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    await redis.flushall()
    defaults = Settings()
    bounds: Bounds = defaults.bounds
    secure = {**REDIS_ON, "SWITCHBOARD_INSECURE": "false"}
    process = server_process("--redis-url", redis_url, "--secret", SECRET, env=secure)
    base = process.url
    baseline = await used_memory(redis)
    fill = Fill()
    chatters: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as http:
        began = time.monotonic()
        jobs = [asyncio.create_task(starter(http, base, fill, chatters)) for _ in range(STARTERS)]
        jobs.append(asyncio.create_task(sampler(redis, fill, began)))
        await asyncio.wait(jobs, timeout=FILL_SECONDS, return_when=asyncio.FIRST_EXCEPTION)
        elapsed = time.monotonic() - began
        for job in jobs + chatters:
            job.cancel()
        for job in jobs + chatters:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, aiohttp.ClientError):
                await job
        peak = max([memory for _, memory in fill.memory] + [await used_memory(redis)])
        agent = bearer(TokenAuthority(SECRET).mint("agent", "auditor", 600))
        pages = await every_page(http, f"{base}{WORKBENCH}/sessions?status=waiting_agent", headers=agent)
        waiting = [session for page in pages for session in page["sessions"]]

    # Starts and escalations share one budget per address: a burst of --start-rate, then the rate.
    budget = defaults.start_rate + defaults.start_rate * elapsed / 60 + 1
    assert 0 < len(fill.started) <= budget, (len(fill.started), budget)
    assert len(fill.started) + len(waiting) <= budget, (len(fill.started), len(waiting), budget)
    assert not [answer for answer in fill.answers if answer.split()[1].startswith("5")], fill.answers
    assert fill.answers["start 429"] > 0 and fill.answers["chat 200"] > 0, fill.answers

    # Every key expires, and nothing holds more than its bound.
    keys = cast(list[str], await redis.keys("*"))  # the suite's client decodes: str names
    forever = [key for key in keys if await redis.pttl(key) < 0]
    assert not forever, f"keys without an expiry: {forever[:10]}"
    for name, _ in fill.started:
        transcript = int(await redis.get(f"messages_size:{name}") or 0)
        assert transcript <= bounds.transcript_bytes, (name, transcript)
    for key in [key for key in keys if key.endswith("#bytes")]:
        size = int(await redis.get(key) or 0)
        assert size <= defaults.history_bytes * PATTERN_HISTORY_FACTOR, (
            key,
            size,
        )  # the pattern history's bound is the largest
    for key in [key for key in keys if key.startswith("history:session:") and not key.endswith("#bytes")]:
        assert int(await redis.get(key + "#bytes") or 0) <= defaults.history_bytes, key

    # Redis grew by what the bounds allow for the conversations let through, not by what was posted.
    # Each conversation: its transcript and its channel's history; all of them: the history of all
    # sessions (ten times a channel's).
    counted = (
        len(fill.started) * (bounds.transcript_bytes + defaults.history_bytes)
        + defaults.history_bytes * PATTERN_HISTORY_FACTOR
    )
    allowed = int(counted * ALLOCATOR) + len(fill.started) * PER_CONVERSATION_OVERHEAD + SLACK
    grown = peak - baseline
    logger.info(
        "fill %.0f s from one address: %d conversations started (%d starts refused), %d waiting; "
        "%d messages answered 200 (%.1f MB of content), %d answered 429; Redis grew %.1f MB at "
        "its peak (%.2f MB per conversation; allowed %.1f MB); samples %s",
        elapsed,
        len(fill.started),
        fill.answers["start 429"],
        len(waiting),
        fill.answers["chat 200"],
        fill.posted_bytes / 1e6,
        fill.answers["chat 429"],
        grown / 1e6,
        grown / 1e6 / len(fill.started),
        allowed / 1e6,
        [(round(second), round((memory - baseline) / 1e6, 1)) for second, memory in fill.memory],
    )
    assert grown <= allowed, (grown, allowed)
    assert fill.posted_bytes > grown, "the fill posted less than Redis kept: the test did not fill"
