"""Sessions' outboxes on a Redis Cluster: the events a session's change causes on other slots
(agent channels, the broadcast, the sessions feed) are written by the change's own script into
a stream beside the session (``outbox:{name}``), and published from there, so that a process
killed after the script loses none of them.

The process that committed the change publishes them at once and deletes them from the stream.
Before its script it adds the session to a pending index (one of ``PENDING_SHARDS`` sorted sets,
spread over the cluster, scored by time) and removes it once the outbox is drained; every
process relays, every ``interval``, the outboxes of entries older than ``grace``: those of a
process that died, or that waited for a shard that was away. An entry can thus be published
twice (by its committer and a relay, or by a committer that died before deleting it); the
relayed publish script refuses an entry no newer than the session's mark on the target slot,
so it goes out once. Per target slot the entries go out in their order: a drain stops at the
first it cannot publish on that slot.
"""

import asyncio
import binascii
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from realtime.channels import slot_tag
from realtime.cluster_pipes import ClusterPipes
from realtime.errors import BrokerError, ShardUnavailable
from realtime.layout import namespace_prefix
from realtime.redis_replies import UNAVAILABLE, as_text

logger = logging.getLogger(__name__)

# Publishes one outbox entry: (channel, data, the session's mark key on the channel's slot, the
# entry's id) -> the event id, or None if the entry was out already.
RelayedPublish = Callable[[str, str, str, str], Awaitable[str | None]]

PENDING_SHARDS = 16  # sorted sets the pending outboxes are spread over
RELAY_BATCH = 200  # pending outboxes one relay round reads per index
NOTED_LIMIT = 10_000  # changes whose pending entry this process remembers, to take it off


class SessionOutboxes:
    def __init__(
        self,
        cluster: RedisCluster,
        pipes: ClusterPipes,
        publish: RelayedPublish,
        *,
        namespace: str = "",
        ttl_ms: int,
        grace: float = 2.0,
        interval: float = 1.0,
        retry: tuple[float, float] = (0.1, 2.0),
        limit: int = 10_000,
    ) -> None:
        """``ttl_ms``: the lifetime of the pending indexes and the marks (the histories');
        ``grace``: how old a pending entry is before a relay takes it up; ``retry``: seconds
        before a slot that was away is tried again, first and at most (doubling); ``limit``:
        entries this process may know waiting for away slots before it refuses new ones."""
        self._cluster = cluster  # the relay's reads
        self._pipes = pipes  # what every change adds: the note, the deletes
        self._publish = publish
        self._prefix = namespace_prefix(namespace)
        self._ttl_ms = ttl_ms
        self._grace = grace
        self._interval = interval
        self._retry = retry
        self._limit = limit
        # Per slot tag away: when to try it again, and the delay after that.
        self._away: dict[str, tuple[float, float]] = {}
        # Per slot tag away, the entries (session, entry id) this process left waiting for it:
        # forgotten once the slot takes an event again (whoever relays them then).
        self._waiting: dict[str, set[tuple[str, str]]] = {}
        # The pending index each change of this process is noted in, until it is drained.
        self._noted: dict[str, str] = {}
        self._relay: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(map(len, self._waiting.values()))

    def outbox_key(self, home: str) -> str:
        return f"{self._prefix}outbox:{{{home}}}"

    def mark_key(self, channel: str, home: str) -> str:
        return f"{self._prefix}relayed:{{{slot_tag(channel)}}}{home}"

    def pending_keys(self, home: str) -> list[str]:
        """The pending indexes, the one ``home`` is noted in first (then the others in turn,
        should that one's shard be away)."""
        first = binascii.crc32(home.encode()) % PENDING_SHARDS
        return [self._pending_key((first + i) % PENDING_SHARDS) for i in range(PENDING_SHARDS)]

    def _pending_key(self, shard: int) -> str:
        return f"{self._prefix}outbox-pending:{{outbox-{shard}}}"

    def pending_member(self, home: str) -> str:
        """A name for one change's stay in the pending index (a session may have several)."""
        if self.waiting >= self._limit:
            raise ShardUnavailable(f"{self._limit} events already wait for their shards")
        return f"{home} {secrets.token_hex(6)}"

    async def note_pending(self, home: str, member: str) -> None:
        """Before the script: from here a relay would find the outbox if this process died.
        In the first pending index whose shard answers: one shard away must not stop the
        sessions of the others."""
        failure: BaseException | None = None
        for key in self.pending_keys(home):
            if self._is_away(key):
                continue
            try:
                await asyncio.gather(  # one write: the pipe sends a turn's commands together
                    self._pipes.execute(key, "ZADD", key, time.time() * 1000, member),
                    self._pipes.execute(key, "PEXPIRE", key, self._ttl_ms),
                )
            except (*UNAVAILABLE, ShardUnavailable) as exc:
                failure = exc
                self._went_away(key, exc)
                continue
            except RedisError as exc:
                raise BrokerError(f"could not note the outbox as pending: {exc}") from exc
            self._away.pop(key, None)
            self._noted[member] = key
            if len(self._noted) > NOTED_LIMIT:
                del self._noted[next(iter(self._noted))]  # a relay takes it off
            return
        raise ShardUnavailable(f"no pending outbox index answers: {failure!r}")

    async def drained(self, home: str, member: str, held: Sequence[str]) -> None:
        """After the script: publish what the outbox holds (id, channel, data each, as the
        script answered); off the pending index if all went out."""
        entries = [(held[i], held[i + 1], held[i + 2]) for i in range(0, len(held), 3)]
        if await self._drain(home, entries) == 0:
            await self.forget(home, member)

    async def _drain(self, home: str, entries: Sequence[tuple[str, str, str]]) -> int:
        """Publish ``entries`` in order, except on slots that are away (and all after the
        first that fails, per slot); delete the published ones. Returns how many remain."""
        blocked: set[str] = set()
        out: list[str] = []
        for entry_id, channel, data in entries:
            tag = slot_tag(channel)
            if tag in blocked or self._is_away(tag):
                blocked.add(tag)
                self._waiting.setdefault(tag, set()).add((home, entry_id))
                continue
            try:
                await self._publish(channel, data, self.mark_key(channel, home), entry_id)
            except ShardUnavailable as exc:
                self._went_away(tag, exc)
                blocked.add(tag)
                self._waiting.setdefault(tag, set()).add((home, entry_id))
                continue
            except BrokerError as exc:
                logger.error("dropped an event of %r's outbox on %s: %s", home, channel, exc)
            self._away.pop(tag, None)
            self._waiting.pop(tag, None)
            out.append(entry_id)
        if out:
            try:
                key = self.outbox_key(home)
                await self._pipes.execute(key, "XDEL", key, *out)
            except (RedisError, *UNAVAILABLE, ShardUnavailable) as exc:
                # Left in the outbox: a relay finds them, and the marks keep them from going
                # out twice.
                logger.warning("published events of %r's outbox not deleted from it: %r", home, exc)
        return len(entries) - len(out)

    async def forget(self, home: str, member: str) -> None:
        """Take a change's note off the pending index (its outbox is drained, or the script
        wrote nothing)."""
        key = self._noted.pop(member, None)
        if key is None:
            return  # a relay takes it off
        try:
            await self._pipes.execute(key, "ZREM", key, member)
        except (RedisError, *UNAVAILABLE, ShardUnavailable) as exc:
            logger.debug("pending outbox of %r left for a relay: %r", home, exc)

    def _is_away(self, tag: str) -> bool:
        away = self._away.get(tag)
        return away is not None and time.monotonic() < away[0]

    def _went_away(self, slot: str, exc: BaseException) -> None:
        """``slot``: a slot tag, or a pending index's key."""
        delay = self._away[slot][1] if slot in self._away else self._retry[0]
        self._away[slot] = (time.monotonic() + delay, min(delay * 2, self._retry[1]))
        logger.warning("%s is away (%r); its events wait in their sessions' outboxes", slot, exc)

    def start(self) -> None:
        if self._relay is None:
            self._relay = asyncio.create_task(self._relay_forever(), name="session-outbox-relay")

    async def close(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
            await asyncio.gather(self._relay, return_exceptions=True)
        if self.waiting:
            logger.warning("%d events wait in their sessions' outboxes for a relay", self.waiting)

    async def _relay_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            relayed = await self.relay_once()
            if relayed:
                logger.info("relayed %d events from sessions' outboxes", relayed)

    async def relay_once(self) -> int:
        """Publish what waits in the outboxes pending longer than the grace; returns how many
        entries went out (or were found out already). A shard that is away is passed over."""
        cutoff = (time.time() - self._grace) * 1000
        relayed = 0
        for shard in range(PENDING_SHARDS):
            key = self._pending_key(shard)
            try:
                members = cast(
                    list[bytes],
                    await self._cluster.zrangebyscore(key, "-inf", cutoff, start=0, num=RELAY_BATCH),
                )
            except (RedisError, *UNAVAILABLE) as exc:
                logger.debug("pending outboxes of %s not read: %r", key, exc)
                continue
            for raw in members:
                member = as_text(raw)
                home = member.rpartition(" ")[0]
                try:
                    entries = await self._held(home)
                    left = await self._drain(home, entries)
                    if left == 0:
                        await self._cluster.zrem(key, member)
                except (RedisError, *UNAVAILABLE) as exc:
                    logger.debug("outbox of %r not relayed: %r", home, exc)
                    continue
                relayed += len(entries) - left
        return relayed

    async def _held(self, home: str) -> list[tuple[str, str, str]]:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await self._cluster.xrange(self.outbox_key(home))
        )
        return [(as_text(entry_id), _field(fields, "c"), _field(fields, "d")) for entry_id, fields in entries]


def _field(fields: dict[bytes, bytes] | dict[str, str], name: str) -> str:
    """A stream entry's field, from a client that decodes replies or one that does not."""
    value = fields.get(name) if name in fields else fields.get(name.encode())  # type: ignore[call-overload]
    return as_text(value if value is not None else b"")
