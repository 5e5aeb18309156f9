"""The agent registry on Redis. Every key carries the workbench's hash tag, the slot of the
broadcast (realtime.channels.WORKBENCH_TAG): a status change and its ``agent_status`` event are
one script on one Redis and on a Redis Cluster alike.

``agents:{sse:workbench}`` is a hash of agent records (JSON), ``agents_seen:{sse:workbench}``
a sorted set of when each agent was last seen with a stream open (unix ms), and
``agent_load:{sse:workbench}<agent_id>`` the conversations counted against an agent (a sorted
set, by when each was taken), ``agents_assigned:{sse:workbench}`` when each agent last had one
counted (unix ms). All expire AGENT_TTL after their last write.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.domain.agents.base import (
    AGENT_TTL,
    MAX_AGENTS,
    Agent,
    AgentRegistry,
    AgentStatus,
    AnnounceAgent,
    AtCapacity,
    TooManyAgents,
    changed,
    new_agent,
)
from app.domain.store.base import StoreUnavailable
from realtime.channels import WORKBENCH_TAG
from realtime.event_script import EVENTS_LUA, NO_EVENTS
from realtime.layout import namespace_prefix
from realtime.redis_replies import as_text
from realtime.scripted_events import ScriptedEvents

MAX_ATTEMPTS = 16
T = TypeVar("T")

# KEYS: the agents, the seen set, then the events'. ARGV: 1 the agent's id, 2 its record as
# read ("" = none), 3 its record to write ("" = unchanged), 4 MAX_AGENTS, 5 the keys' lifetime
# (ms), 6 when it is seen (ms; "" = not now); then the events'. {1, ids...} if written, {0, the
# record as it is} if it changed meanwhile, {-1} if it would be one agent too many.
SET_AGENT_SCRIPT = (
    EVENTS_LUA
    + """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then
  return {0, current}
end
if current == '' and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return {-1}
end
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {1, unpack(publish_events(2, 6))}
"""
)

# KEYS: the agents, the agent's load, when each agent last had one counted. ARGV: the agent's
# id, the conversation, now (ms), --agent-capacity, the lifetime (ms). {1, 1} if counted now,
# {1, 0} if counted already, {0, capacity} if full.
RESERVE_SCRIPT = """
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  return {1, 0}
end
local capacity = tonumber(ARGV[4])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local agent = cjson.decode(raw)
  if type(agent.capacity) == 'number' then
    capacity = agent.capacity
  end
end
if redis.call('ZCARD', KEYS[2]) >= capacity then
  return {0, capacity}
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return {1, 1}
"""


class RedisAgentRegistry(AgentRegistry):
    def __init__(
        self,
        redis: Redis | RedisCluster,
        default_capacity: int,
        *,
        namespace: str = "",
        events: ScriptedEvents | None = None,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(default_capacity)
        self._timeout = timeout
        self._redis = redis
        self._events = events
        prefix = namespace_prefix(namespace)
        self._agents = f"{prefix}agents:{{{WORKBENCH_TAG}}}"
        self._seen = f"{prefix}agents_seen:{{{WORKBENCH_TAG}}}"
        self._load_prefix = f"{prefix}agent_load:{{{WORKBENCH_TAG}}}"
        self._assigned = f"{prefix}agents_assigned:{{{WORKBENCH_TAG}}}"
        self._set_agent = redis.register_script(SET_AGENT_SCRIPT)
        self._reserve = redis.register_script(RESERVE_SCRIPT)
        self._ttl_ms = int(AGENT_TTL * 1000)

    # Every call bounded by --redis-timeout; an outage is StoreUnavailable (503), as the store's.
    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await operation
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"agent registry unavailable: {exc!r}") from exc

    async def get(self, agent_id: str) -> Agent:
        return await self._call(self._get(agent_id))

    async def all(self) -> list[tuple[Agent, int]]:
        return await self._call(self._all())

    async def set_status(
        self,
        agent_id: str,
        status: AgentStatus,
        capacity: int | None = None,
        *,
        announce: AnnounceAgent | None = None,
    ) -> tuple[Agent, bool]:
        return await self._call(self._set_status(agent_id, status, capacity, announce=announce))

    async def reserve(self, agent_id: str, session_name: str) -> bool:
        return await self._call(self._reserve_one(agent_id, session_name))

    async def release(self, agent_id: str, session_name: str) -> None:
        await self._call(self._release(agent_id, session_name))

    async def last_assigned(self) -> dict[str, float]:
        pairs: list[Any] = await self._call(self._redis.zrange(self._assigned, 0, -1, withscores=True))
        return {as_text(agent_id): score / 1000 for agent_id, score in pairs}

    async def held(self, agent_id: str) -> list[str]:
        return await self._call(self._held(agent_id))

    async def seen(self, agent_ids: Sequence[str], now: float) -> None:
        await self._call(self._seen_now(agent_ids, now))

    async def unseen_since(self, before: float) -> list[str]:
        return await self._call(self._unseen_since(before))

    def _load(self, agent_id: str) -> str:
        return self._load_prefix + agent_id

    async def _get(self, agent_id: str) -> Agent:
        raw = await self._redis.hget(self._agents, agent_id)
        return _decoded(raw) if raw is not None else new_agent(agent_id)

    async def _all(self) -> list[tuple[Agent, int]]:
        records: dict[Any, Any] = await self._redis.hgetall(self._agents)
        agents = sorted((_decoded(raw) for raw in records.values()), key=lambda a: a["agent_id"])
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent in agents:
                pipe.zcard(self._load(agent["agent_id"]))
            counts = await pipe.execute()
        return [(agent, int(count)) for agent, count in zip(agents, counts, strict=True)]

    async def _set_status(
        self,
        agent_id: str,
        status: AgentStatus,
        capacity: int | None = None,
        *,
        announce: AnnounceAgent | None = None,
    ) -> tuple[Agent, bool]:
        raw = await self._redis.hget(self._agents, agent_id)
        for _ in range(MAX_ATTEMPTS):
            read = as_text(raw) if raw is not None else ""
            agent = _decoded(read) if read else new_agent(agent_id)
            moved = changed(agent, status, capacity)
            planned = None
            if moved is not None and announce is not None and self._events is not None:
                planned = self._events.plan(announce(moved), home=WORKBENCH_TAG)
            section = planned.section if planned is not None else NO_EVENTS
            seen = str(int(time.time() * 1000)) if status != "offline" else ""
            args: list[Any] = [
                agent_id,
                read,
                json.dumps(moved) if moved is not None else "",
                MAX_AGENTS,
                self._ttl_ms,
                seen,
            ]
            reply = await self._set_agent(
                keys=[self._agents, self._seen, *section.keys], args=[*args, *section.args]
            )
            outcome = int(reply[0])
            if outcome == -1:
                raise TooManyAgents()
            if outcome == 1:
                if planned is not None:
                    assert self._events is not None
                    await self._events.finish(planned, [as_text(i) for i in reply[1:]])
                return (moved if moved is not None else agent), moved is not None
            raw = reply[1] or None
        raise StoreUnavailable(f"agent {agent_id!r} is too contended; try again")

    async def _reserve_one(self, agent_id: str, session_name: str) -> bool:
        reply = await self._reserve(
            keys=[self._agents, self._load(agent_id), self._assigned],
            args=[agent_id, session_name, int(time.time() * 1000), self.default_capacity, self._ttl_ms],
        )
        if not int(reply[0]):
            raise AtCapacity(agent_id, int(reply[1]))
        return bool(int(reply[1]))

    async def _release(self, agent_id: str, session_name: str) -> None:
        await self._redis.zrem(self._load(agent_id), session_name)

    async def _held(self, agent_id: str) -> list[str]:
        names: list[Any] = await self._redis.zrange(self._load(agent_id), 0, -1)
        return [as_text(name) for name in names]

    async def _seen_now(self, agent_ids: Sequence[str], now: float) -> None:
        if agent_ids:
            stamp = int(now * 1000)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._seen, dict.fromkeys(agent_ids, stamp))
                pipe.pexpire(self._seen, self._ttl_ms)
                await pipe.execute()

    async def _unseen_since(self, before: float) -> list[str]:
        records: dict[Any, Any] = await self._redis.hgetall(self._agents)
        pairs: list[Any] = await self._redis.zrange(self._seen, 0, -1, withscores=True)
        seen = {as_text(agent_id): score / 1000 for agent_id, score in pairs}
        present = (_decoded(raw) for raw in records.values())
        return sorted(
            a["agent_id"] for a in present if a["status"] != "offline" and seen.get(a["agent_id"], 0) < before
        )


def _decoded(raw: Any) -> Agent:
    return cast(Agent, json.loads(as_text(raw)))
