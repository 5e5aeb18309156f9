"""The bot's leases on Redis (SessionStore.bot_may_speak): the fence a streamed reply's every
piece passes before it is written to the customer, and what a change that moves a bot_active
session waits for after it commits. The lease key shares the session's hash tag, so the fence
script sees the session as the change's script left it: one of them runs first."""

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.domain.store.base import BOT_LEASE
from app.domain.store.redis_indexes import StoreKeys, ms
from realtime.command_pipe import CommandPipe, PipeScript

# KEYS[1] the session, KEYS[2] its leases; ARGV the status_seq the reply began at, the
# reply's token, the lease's lifetime (ms). 1 if the session is still bot_active at that
# status_seq (then the token holds a lease), else 0. status_seq is a time in microseconds, exact
# in a Lua number (below 2^53).
TAKE_LEASE = PipeScript.of(
    """
local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
local session = cjson.decode(raw)
if session.status ~= 'bot_active' or string.format('%.0f', session.status_seq) ~= ARGV[1] then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)
# How often a change that waits for a lease looks again.
LEASE_POLL = 0.002


class BotLeases:
    def __init__(self, redis: Redis | RedisCluster, keys: StoreKeys, pipe: CommandPipe | None) -> None:
        self._redis = redis
        self._keys = keys
        self._pipe = pipe
        self._take = redis.register_script(TAKE_LEASE.text)

    async def _execute(self, *command: Any) -> Any:
        if self._pipe is not None:
            return await self._pipe.execute(*command)
        return await self._redis.execute_command(*command)

    async def take(self, session_name: str, status_seq: int, token: str) -> bool:
        keys = [self._keys.session(session_name), self._keys.bot_leases(session_name)]
        args: list[str | int] = [str(status_seq), token, ms(BOT_LEASE)]
        if self._pipe is not None:
            taken = await self._pipe.run_script(TAKE_LEASE, keys, args)
        else:
            taken = await self._take(keys=keys, args=args)
        return bool(int(taken))

    async def give_back(self, session_name: str, token: str) -> None:
        await self._execute("SREM", self._keys.bot_leases(session_name), token)

    async def quiet(self, session_name: str) -> None:
        """Return once no lease on the session is held (they lapse within BOT_LEASE)."""
        key = self._keys.bot_leases(session_name)
        for _ in range(int(BOT_LEASE / LEASE_POLL) + 1):
            if not int(await self._execute("EXISTS", key)):
                return
            await asyncio.sleep(LEASE_POLL)
