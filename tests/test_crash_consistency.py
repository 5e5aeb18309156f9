"""A server process killed with SIGKILL at random moments, many times, while customers, the bot
and agents act on several conversations at once: no committed change is left without its
events. Each action is one Redis script that writes the change and publishes its events
(docs/architecture.md, "One action, one script"), so a process can die before it (nothing
happened) or after it (everything did), never in between.

Checked in Redis itself after the last kill, for every conversation: every message of the
transcript has its ``new_message`` event in the channel's history, every message a request was
answered 200 for is there, the ``status_change`` events chain from one status to the next and
end at the session's status, and every one has its twin on the broadcast. (The design before,
a store write and then the publishes, failed this 3 runs out of 3: a message stored without
its event.)"""

import asyncio
import json
import random
from collections import Counter
from typing import Any, cast

import aiohttp
from redis.asyncio import Redis

from realtime.channels import BROADCAST, session_channel
from realtime.redis_broker import history_key
from tests.support.api import CHATBOT, WORKBENCH, create, send
from tests.support.processes import MANY_STARTS, REDIS_ON, StartServer

ROUNDS = 12  # process starts, each ended by a SIGKILL
SESSIONS = 6
KILL_AFTER = (0.05, 0.6)  # seconds of traffic before the kill, at random
ACTIONS_PER_ROUND = 400  # per conversation, at most: the kill comes first
SEED = 20261204
NO_LIMITS = ("--rate-limit", "1000000", "--rate-burst", "1000000", *MANY_STARTS)
# Histories that keep every event of the test, so that each change can be matched to its own.
WHOLE_HISTORY = ("--history-size", "1000000", "--history-bytes", "1000000000")


async def converse(
    http: aiohttp.ClientSession, base: str, name: str, agent: str, answered: list[str]
) -> None:
    """A conversation's life on repeat: the customer and the bot, an agent takes over, says
    something twice, releases it. Ends at the first request the dead process cannot take."""
    say = f"{WORKBENCH}/sessions/{name}/messages"
    steps: list[tuple[str, dict[str, Any]]] = [
        (f"{CHATBOT}/chat", {"session_name": name, "content": "hello"}),
        (f"{WORKBENCH}/sessions/{name}/takeover", {"agent_id": agent}),
        (say, {"agent_id": agent, "content": "one moment"}),
        (say, {"agent_id": agent, "content": "done"}),
        (f"{WORKBENCH}/sessions/{name}/release", {"agent_id": agent}),
    ]
    for i in range(ACTIONS_PER_ROUND):
        path, body = steps[i % len(steps)]
        try:
            reply = await send(http, "POST", base + path, body)
        except (aiohttp.ClientError, TimeoutError):
            return  # killed
        if reply.status == 200 and isinstance(reply.body, dict):
            for key in ("message", "reply"):
                message = reply.body.get(key)
                if isinstance(message, dict):
                    answered.append(message["id"])


async def events_of(redis: Redis, channel: str) -> list[dict[str, Any]]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(history_key(channel)))
    return [json.loads(fields["d"]) for _, fields in entries]


async def test_a_process_killed_at_any_moment_leaves_no_change_unannounced(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    await redis.flushall()
    process = server_process("--redis-url", redis_url, *NO_LIMITS, *WHOLE_HISTORY, env=REDIS_ON)
    names = [f"crash{i}" for i in range(SESSIONS)]
    async with aiohttp.ClientSession() as http:
        for name in names:
            await create(http, name, base=process.url)
    rng = random.Random(SEED)
    answered: dict[str, list[str]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        if round_:
            process.start()
        async with aiohttp.ClientSession() as http:
            talks = [
                asyncio.create_task(converse(http, process.url, name, f"agent{i}", answered[name]))
                for i, name in enumerate(names)
            ]
            await asyncio.sleep(rng.uniform(*KILL_AFTER))
            process.kill()
            await asyncio.gather(*talks)

    broadcast = Counter(
        (event["payload"]["session_name"], event["payload"]["previous_status"], event["payload"]["status"])
        for event in await events_of(redis, BROADCAST)
        if event["type"] == "status_change"
    )
    actions = 0
    for name in names:
        session = json.loads(cast(str, await redis.get(f"session:{{{name}}}")))
        transcript = [
            json.loads(raw) for raw in cast(list[str], await redis.lrange(f"messages:{{{name}}}", 0, -1))
        ]
        events = await events_of(redis, session_channel(name))
        announced = {event["payload"]["message"]["id"] for event in events if event["type"] == "new_message"}
        missing = [message["id"] for message in transcript if message["id"] not in announced]
        assert not missing, f"{name}: messages stored without their event: {missing}"
        unannounced = [message_id for message_id in answered[name] if message_id not in announced]
        assert not unannounced, f"{name}: answered 200 without an event: {unannounced}"

        status = "bot_active"
        for event in (e for e in events if e["type"] == "status_change"):
            payload = event["payload"]
            assert payload["previous_status"] == status, (
                f"{name}: a change without its event before {payload}"
            )
            status = payload["status"]
            assert broadcast[(name, payload["previous_status"], status)] > 0, f"{name}: no twin of {payload}"
            broadcast[(name, payload["previous_status"], status)] -= 1
            actions += 1
        assert status == session["status"], (
            f"{name}: the session is {session['status']}, its events say {status}"
        )
    assert actions >= SESSIONS, "the processes died before anything happened: the test tested nothing"
    assert sum(len(ids) for ids in answered.values()) > ROUNDS, answered
