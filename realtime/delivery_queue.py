"""Delivery queues (realtime.channels.is_queue): entries written with the change that causes
them (realtime.event_script), taken by readers in consumer groups, acknowledged once handled.

On Redis a queue is a stream with a consumer group per reader kind (one per webhook receiver):
an entry taken and not acknowledged stays pending to its consumer, so a process that dies
mid-delivery leaves it for the next one (its own name again after a restart, or any process
once the entry has been idle ``claim_after``). Beside the stream, on its slot: the number of
tries of each pending entry, and the dead letters of each group (entries given up on), both
bounded and expiring. In memory the same interface holds the entries in the process (the
embedded mode keeps nothing across a restart anyway).
"""

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from realtime.event_script import QUEUE_MAXLEN, QUEUE_TTL_MS
from realtime.redis_replies import as_text

# Dead letters kept per group at most (the newest).
DEAD_LETTERS = 10_000


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    data: str | None  # None: trimmed from the queue (past its bounds) before it was handled


class DeliveryQueue(ABC):
    @abstractmethod
    async def take(self, group: str, consumer: str, count: int, block: float) -> list[Entry]:
        """Entries nobody in the group has taken yet (waiting up to ``block`` seconds)."""

    @abstractmethod
    async def pending(self, group: str, consumer: str, count: int) -> list[Entry]:
        """Entries this consumer took and has not acknowledged (after a restart: resume)."""

    @abstractmethod
    async def claim(self, group: str, consumer: str, idle: float, count: int) -> list[Entry]:
        """Entries other consumers took and left idle for ``idle`` seconds (they died)."""

    @abstractmethod
    async def hold(self, group: str, consumer: str, entry_id: str) -> int:
        """Keep an entry this consumer is still trying (nobody claims it), count the try;
        returns how many tries it has had, this one included."""

    @abstractmethod
    async def ack(self, group: str, entry_id: str) -> None:
        """Handled: the entry leaves the group's pending ones."""

    @abstractmethod
    async def bury(self, group: str, entry_id: str, letter: str) -> None:
        """Given up on: ``letter`` goes to the group's dead letters, and the entry is acked."""

    @abstractmethod
    async def dead_letters(self, group: str, count: int) -> list[str]:
        """The newest dead letters of the group."""


# KEYS: the stream, its tries, the group's dead letters; ARGV: group, entry id, letter, bound,
# lifetime (ms). The dead letter and the ack are one step: an entry is never both pending and
# dead, nor neither.
BURY_LUA = """
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('HDEL', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""


class RedisDeliveryQueue(DeliveryQueue):
    def __init__(self, redis: Redis | RedisCluster, key: str) -> None:
        self._redis = redis
        self._key = key
        # On the stream's slot: a cluster key shares its hash tag (the key's braces).
        self._tries = key + "#tries"
        self._bury = redis.register_script(BURY_LUA)

    def _dead(self, group: str) -> str:
        return f"{self._key}#dead:{group}"

    async def _group(self, group: str) -> None:
        try:
            await self._redis.xgroup_create(self._key, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self._redis.pexpire(self._key, QUEUE_TTL_MS, nx=True)

    async def _read(
        self, group: str, consumer: str, count: int, start: str, block: float | None
    ) -> list[Entry]:
        block_ms = None if block is None else max(1, int(block * 1000))
        for _ in range(2):
            try:
                reply: Any = await self._redis.xreadgroup(
                    group, consumer, {self._key: start}, count=count, block=block_ms
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._group(group)  # a new queue, or one that expired
                continue
            return [_entry(entry_id, fields) for _, entries in reply or () for entry_id, fields in entries]
        return []

    async def take(self, group: str, consumer: str, count: int, block: float) -> list[Entry]:
        return await self._read(group, consumer, count, ">", block)

    async def pending(self, group: str, consumer: str, count: int) -> list[Entry]:
        return await self._read(group, consumer, count, "0", None)

    async def claim(self, group: str, consumer: str, idle: float, count: int) -> list[Entry]:
        try:
            reply: Any = await self._redis.xautoclaim(
                self._key, group, consumer, min_idle_time=int(idle * 1000), start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        claimed = [_entry(entry_id, fields) for entry_id, fields in reply[1]]
        # Entries trimmed meanwhile: Redis has dropped them from the pending ones already.
        return claimed + [Entry(as_text(entry_id), None) for entry_id in (reply[2] if len(reply) > 2 else ())]

    async def hold(self, group: str, consumer: str, entry_id: str) -> int:
        field_name = f"{group} {entry_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xclaim(self._key, group, consumer, 0, [entry_id], justid=True)
            pipe.hincrby(self._tries, field_name, 1)
            pipe.pexpire(self._tries, QUEUE_TTL_MS)
            _, tries, _ = await pipe.execute()
        return int(tries)

    async def ack(self, group: str, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self._key, group, entry_id)
            pipe.hdel(self._tries, f"{group} {entry_id}")
            await pipe.execute()

    async def bury(self, group: str, entry_id: str, letter: str) -> None:
        await self._bury(
            keys=[self._key, self._tries, self._dead(group)],
            args=[group, entry_id, letter, DEAD_LETTERS, QUEUE_TTL_MS],
        )

    async def dead_letters(self, group: str, count: int) -> list[str]:
        return [as_text(letter) for letter in await self._redis.lrange(self._dead(group), 0, count - 1)]


def _entry(entry_id: Any, fields: Any) -> Entry:
    data = None
    if fields:
        raw = fields.get(b"d", fields.get("d"))
        data = as_text(raw) if raw is not None else None
    return Entry(as_text(entry_id), data)


@dataclass(slots=True)
class _Group:
    next_index: int = 0  # of the first entry nobody in the group has taken
    taken: dict[str, tuple[str, float]] = field(default_factory=dict)  # id: (consumer, since)
    tries: dict[str, int] = field(default_factory=dict)
    dead: deque[str] = field(default_factory=lambda: deque(maxlen=DEAD_LETTERS))


class MemoryDeliveryQueue(DeliveryQueue):
    """The same in the process: bounded like the stream (QUEUE_MAXLEN entries, QUEUE_TTL_MS)."""

    def __init__(self) -> None:
        self._entries: deque[tuple[int, str, str, float]] = deque()  # (index, id, data, added)
        self._count = 0
        self._groups: dict[str, _Group] = {}
        self._arrived = asyncio.Event()

    def append(self, data: str) -> str:
        now = time.time()
        self._count += 1
        entry_id = f"{int(now * 1000)}-{self._count}"
        self._entries.append((self._count, entry_id, data, now))
        while len(self._entries) > QUEUE_MAXLEN or self._entries[0][3] < now - QUEUE_TTL_MS / 1000:
            self._entries.popleft()
        self._arrived.set()
        return entry_id

    def _group(self, name: str) -> _Group:
        return self._groups.setdefault(name, _Group())

    def _data(self, entry_id: str) -> str | None:
        return next((data for _, known, data, _ in self._entries if known == entry_id), None)

    async def take(self, group: str, consumer: str, count: int, block: float) -> list[Entry]:
        state = self._group(group)
        fresh = [e for e in self._entries if e[0] > state.next_index][:count]
        if not fresh:
            self._arrived.clear()
            try:
                # Not wait_for: Python 3.11's can lose a cancellation (app.process.rounds.stop).
                async with asyncio.timeout(block):
                    await self._arrived.wait()
            except TimeoutError:
                return []
            fresh = [e for e in self._entries if e[0] > state.next_index][:count]
        now = time.monotonic()
        for index, entry_id, _, _ in fresh:
            state.next_index = index
            state.taken[entry_id] = (consumer, now)
        return [Entry(entry_id, data) for _, entry_id, data, _ in fresh]

    async def pending(self, group: str, consumer: str, count: int) -> list[Entry]:
        taken = self._group(group).taken
        mine = [entry_id for entry_id, (owner, _) in taken.items() if owner == consumer][:count]
        return [Entry(entry_id, self._data(entry_id)) for entry_id in mine]

    async def claim(self, group: str, consumer: str, idle: float, count: int) -> list[Entry]:
        state, now = self._group(group), time.monotonic()
        stale = [i for i, (owner, since) in state.taken.items() if owner != consumer and since <= now - idle]
        for entry_id in stale[:count]:
            state.taken[entry_id] = (consumer, now)
        return [Entry(entry_id, self._data(entry_id)) for entry_id in stale[:count]]

    async def hold(self, group: str, consumer: str, entry_id: str) -> int:
        state = self._group(group)
        state.taken[entry_id] = (consumer, time.monotonic())
        state.tries[entry_id] = state.tries.get(entry_id, 0) + 1
        return state.tries[entry_id]

    async def ack(self, group: str, entry_id: str) -> None:
        state = self._group(group)
        state.taken.pop(entry_id, None)
        state.tries.pop(entry_id, None)

    async def bury(self, group: str, entry_id: str, letter: str) -> None:
        self._group(group).dead.appendleft(letter)
        await self.ack(group, entry_id)

    async def dead_letters(self, group: str, count: int) -> list[str]:
        return list(self._group(group).dead)[:count]
