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
its event.)

On a Redis Cluster a script reaches its session's slot only: the broadcast, agent channel and
sessions-feed copies go through the session's outbox (realtime.session_outbox). The cluster
run checks, after a relay, that each of them went out exactly once."""

import asyncio
import json
import logging
import random
from collections import Counter
from typing import Any, cast

import aiohttp
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as ClusterClient

from realtime.channels import BROADCAST, SESSIONS_FEED, agent_channel, session_channel
from realtime.cluster_broker import ClusterLayout
from realtime.redis_broker import history_key
from realtime.session_outbox import PENDING_SHARDS
from tests.support import wait
from tests.support.api import CHATBOT, WORKBENCH, create, send
from tests.support.processes import MANY_STARTS, REDIS_ON, ServerProcess, StartServer
from tests.support.redis_cluster import RedisCluster

logger = logging.getLogger(__name__)

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


async def events_of(
    redis: Redis | ClusterClient, channel: str, *, cluster: bool = False
) -> list[dict[str, Any]]:
    key = ClusterLayout().history_key(channel) if cluster else history_key(channel)
    entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(key))
    return [json.loads(fields["d"]) for _, fields in entries]


async def kill_repeatedly(process: ServerProcess, names: list[str]) -> dict[str, list[str]]:
    """ROUNDS lives of the process, each ended by a SIGKILL amid traffic on every
    conversation; the ids of the messages answered 200, per conversation."""
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
    return answered


async def test_a_process_killed_at_any_moment_leaves_no_change_unannounced(
    server_process: StartServer, redis_url: str, redis: Redis
) -> None:
    await redis.flushall()
    process = server_process("--redis-url", redis_url, *NO_LIMITS, *WHOLE_HISTORY, env=REDIS_ON)
    names = [f"crash{i}" for i in range(SESSIONS)]
    answered = await kill_repeatedly(process, names)

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


async def test_on_a_cluster_a_killed_process_leaves_no_event_of_another_slot_behind(
    server_process: StartServer, cluster_url: str, redis_cluster: RedisCluster
) -> None:
    """The cross-slot copies wait in their sessions' outboxes; a process started after the
    last kill relays what a dead one left there, and each copy is out exactly once: a
    status_change's twin on the broadcast, every session event's copy on the sessions feed,
    an agent channel's messages without a repeat."""
    args = ("--redis-url", cluster_url, *NO_LIMITS, *WHOLE_HISTORY)
    process = server_process(*args, env=REDIS_ON)
    names = [f"crash{i}" for i in range(SESSIONS)]
    answered = await kill_repeatedly(process, names)
    admin = ClusterClient(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in redis_cluster.ports],
        decode_responses=True,
        socket_timeout=2.0,
    )
    await admin.initialize()
    try:
        pending_keys = [f"outbox-pending:{{outbox-{shard}}}" for shard in range(PENDING_SHARDS)]

        async def pending() -> int:
            return sum([await admin.zcard(key) for key in pending_keys])

        left = [await admin.xlen(f"outbox:{{{name}}}") for name in names]
        notes = await pending()
        process.start()  # its relay takes up what the dead ones left
        await wait.until(pending, lambda count: count == 0, timeout=20.0, what="outboxes relayed")
        process.stop()
        logger.info("the killed processes left %d events in outboxes, %d notes", sum(left), notes)

        feed = Counter(
            json.dumps(e, sort_keys=True) for e in await events_of(admin, SESSIONS_FEED, cluster=True)
        )
        broadcast = Counter(
            (e["payload"]["session_name"], e["payload"]["previous_status"], e["payload"]["status"])
            for e in await events_of(admin, BROADCAST, cluster=True)
            if e["type"] == "status_change"
        )
        changes = Counter[tuple[str, str, str]]()
        own = Counter[str]()  # the sessions' events, as the feed should have them
        for name in names:
            events = await events_of(admin, session_channel(name), cluster=True)
            announced = {e["payload"]["message"]["id"] for e in events if e["type"] == "new_message"}
            unannounced = [message_id for message_id in answered[name] if message_id not in announced]
            assert not unannounced, f"{name}: answered 200 without an event: {unannounced}"
            own.update(json.dumps(event, sort_keys=True) for event in events)
            for event in events:
                if event["type"] == "status_change":
                    payload = event["payload"]
                    changes[(name, payload["previous_status"], payload["status"])] += 1
        assert +feed == +own, (
            f"the feed is not the sessions' events once each: missing {own - feed}, extra {feed - own}"
        )
        assert changes, "the processes died before anything happened: the test tested nothing"
        assert +broadcast == +changes, "the broadcast's status changes are not the sessions' own, once each"
        for i in range(SESSIONS):
            messages = [
                e["payload"]["message"]["id"]
                for e in await events_of(admin, agent_channel(f"agent{i}"), cluster=True)
                if e["type"] == "new_message"
            ]
            assert len(messages) == len(set(messages)), f"agent{i}: a message twice on the agent's channel"
    finally:
        await admin.aclose()
