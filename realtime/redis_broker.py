"""Redis broker: one pub/sub connection per process, however many streams are open.

Channels are SUBSCRIBEd when their first local subscriber arrives and UNSUBSCRIBEd when the
last one leaves; one reader task reads the connection and fans each event out to the local
subscriptions. Publishing goes through the ordinary connection pool: a Lua script takes the next
id from the event clock, appends the event to the channel's history stream under that id (XADD)
and PUBLISHes it, in one atomic step, so the id on the wire and in the history are the same.

Redis may be away, at start or for a while: the reader reconnects with capped, jittered
backoff; meanwhile publishes reach this process's own subscribers, and new subscriptions are
served locally. When the connection is back, every channel with local subscribers is
re-subscribed and every subscription is caught up from the history, so a stream open across
the outage misses nothing the history still holds (and is ended, to resume with
``recovered: false``, if it does not).
"""

import asyncio
import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime import ids
from realtime.broker import Broker, BrokerError, History, ShardUnavailable, Subscription, merge
from realtime.channels import PATTERN_HISTORY_FACTOR, SESSION_PATTERN, SESSION_PREFIX, is_pattern
from realtime.events import Event, validated
from schemas.envelope import validate_event

logger = logging.getLogger(__name__)

HISTORY_PREFIX = "history:"
CLOCK_KEY = "events:clock"
# An id this far ahead of this host's clock did not come from the publish script (Redis' TIME
# would have to be wrong by as much): accepting it would make every subscription that saw it
# drop all genuine events until the clock caught up.
MAX_ID_LEAD_MS = 10 * 60 * 1000
DISCONNECTED = (RedisConnectionError, RedisTimeoutError, OSError)
# redis-py tears the pub/sub connection down under a task that is writing to it when the reader
# fails at the same moment; the writer then meets an AttributeError. Same meaning: connection lost.
CONNECTION_LOST = (*DISCONNECTED, AttributeError)
# A Redis Cluster answering that it (or a slot's owner) cannot serve now: a restarted primary
# says CLUSTERDOWN for its first seconds, and the whole cluster does once it has failed.
# Also AttributeError: redis-py closes every connection of a cluster client on such errors,
# under the requests still using them.
UNAVAILABLE = (*CONNECTION_LOST, ClusterDownError, TryAgainError, SlotNotCoveredError)

# KEYS[1] the channel's history stream, KEYS[2] the event clock, KEYS[3] (optional) the history
# of a pattern the channel matches; ARGV: channel, data, maxlen, ttl (ms), publish command
# (PUBLISH, or SPUBLISH on a cluster), the pattern history's maxlen. The id is max(now, last + 1) on one clock for all channels, so ids are unique and
# increasing across channels (a stream of several channels sees them in order). Should a
# history hold a larger id than the clock (the clock key was lost), XADD picks the id itself
# and the clock catches up, rather than the event being refused.
PUBLISH_SCRIPT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[2])
if last then
  local last_ms, last_seq = string.match(last, '^(%d+)-(%d+)$')
  last_ms = tonumber(last_ms)
  if ms <= last_ms then
    ms = last_ms
    seq = tonumber(last_seq) + 1
  end
end
local id = string.format('%.0f-%.0f', ms, seq)
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[2])
if type(added) == 'table' and added.err then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[2])
end
redis.call('SET', KEYS[2], id)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if KEYS[3] then
  redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], id, 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call(ARGV[5], ARGV[1], id .. ' ' .. ARGV[2])
return id
"""

# KEYS[1] the event clock; ARGV[1] ms, ARGV[2] seq: the newest id this process has seen or
# made. Moves the clock forward to it if behind, and returns the clock as it was: a clock
# behind what a process has seen means Redis lost data (a restart without persistence).
ADVANCE_CLOCK_SCRIPT = """
local last = redis.call('GET', KEYS[1])
local behind = true
if last then
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  ms = tonumber(ms)
  seq = tonumber(seq)
  local want_ms = tonumber(ARGV[1])
  behind = ms < want_ms or (ms == want_ms and seq < tonumber(ARGV[2]))
end
if behind then
  redis.call('SET', KEYS[1], ARGV[1] .. '-' .. ARGV[2])
end
return last
"""


# KEYS[1] the event clock. Starts the clock at the current time if it has never run, so that a
# position is always a real moment (a history's age can then be judged against it).
POSITION_SCRIPT = """
local last = redis.call('GET', KEYS[1])
if last then
  return last
end
local now = redis.call('TIME')
local id = string.format('%.0f-0', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
redis.call('SET', KEYS[1], id)
return id
"""


def history_key(channel: str) -> str:
    return HISTORY_PREFIX + channel


class KeyLayout:
    """Where a channel lives on one Redis: plain pub/sub, one history stream per channel and
    one clock for all channels (ids strictly increase across every channel)."""

    sharded = False
    publish_command = "PUBLISH"

    def history_key(self, channel: str) -> str:
        return history_key(channel)

    def clock_key(self, channels: Iterable[str]) -> str:
        return CLOCK_KEY

    def wire(self, channel: str) -> str:
        """The Redis pub/sub channel that carries ``channel``."""
        return channel

    def pattern_history_key(self, channel: str) -> str | None:
        """The history of the pattern ``channel`` matches, written with it (so that a
        pattern subscription resumes like any other); None if it matches none."""
        return self.history_key(SESSION_PATTERN) if channel.startswith(SESSION_PREFIX) else None

    def logical(self, wire: str) -> str:
        return wire



class RedisBroker(Broker):
    name = "redis"

    def __init__(
        self,
        redis: Redis,
        *,
        history_maxlen: int = 1000,
        history_ttl: float = 3600.0,
        subscribe_timeout: float = 5.0,
        liveness_interval: float = 5.0,
        max_backoff: float = 2.0,
        layout: KeyLayout | None = None,
        subscriber: Redis | None = None,
        **kwargs: Any,
    ) -> None:
        """``redis`` runs commands and scripts; the pub/sub connection comes from
        ``subscriber`` if given (a cluster node), else from ``redis``."""
        super().__init__(**kwargs)
        self._redis = redis
        self._layout = layout or KeyLayout()
        self._history_maxlen = history_maxlen
        self._history_ttl = history_ttl
        self._subscribe_timeout = subscribe_timeout
        self._liveness_interval = liveness_interval
        self._max_backoff = max_backoff
        self._publish_script = redis.register_script(PUBLISH_SCRIPT)
        self._advance_clock_script = redis.register_script(ADVANCE_CLOCK_SCRIPT)
        self._position_script = redis.register_script(POSITION_SCRIPT)
        # PUBSUB NUMSUB / SHARDNUMSUB go to the node whose subscribers they count.
        self._pubsub_node = subscriber or redis
        self._pubsub = self._pubsub_node.pubsub()
        self._lock = asyncio.Lock()
        # Channels we have sent SUBSCRIBE for, each with the future its confirmation resolves.
        self._live: dict[str, asyncio.Future[None]] = {}
        # Confirmations still owed by Redis, per channel, in the order SUBSCRIBEs were sent.
        self._pending: dict[str, deque[asyncio.Future[None]]] = {}
        # SUNSUBSCRIBEs sent, per channel, whose confirmations have not arrived yet.
        self._leaving: Counter[str] = Counter()
        # Ids for events published while Redis is away, just above the newest id seen.
        self._clock = ids.IdClock(follow_time=False)
        # Resumes from before this id cannot be complete: Redis lost its history (or never
        # had the events this process published while it was away).
        self._history_floor = (0, 0)
        self._up = asyncio.Event()
        self._needs_resync = False
        self._reader: asyncio.Task[None] | None = None
        self._recoveries: set[asyncio.Task[None]] = set()
        self._closed = False
        # Publishes that reached only this process (Redis away): the readiness probe must
        # not take such an event's return for a working Redis.
        self._local_only_publishes = 0

    @property
    def mode(self) -> str:
        return self.name if self.available else "memory"

    @property
    def available(self) -> bool:
        return self._up.is_set()

    async def start(self, wait: float = 0.0) -> bool:
        """Start the reader; wait up to ``wait`` seconds for Redis. Returns whether it is up.

        The broker works without Redis (locally) and moves to Redis when it answers."""
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await self._connect()
            except (*DISCONNECTED, TimeoutError) as exc:
                logger.warning("Redis pub/sub not connected at start: %s", exc)
        self.start_reader()
        return self.available

    def start_reader(self) -> None:
        """Start the reader, which connects (and reconnects) by itself."""
        self._reader = asyncio.create_task(self._read_loop(), name="redis-broker-reader")

    async def wait_available(self) -> None:
        await self._up.wait()

    async def close(self) -> None:
        await super().close()
        # Under the lock, so UNSUBSCRIBEs already under way finish first; once closed,
        # subscriptions that leave only update the bookkeeping (see _reconcile).
        async with self._lock:
            self._closed = True
        for task in [*self._recoveries, self._reader]:
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("broker task had failed")
        self._reader = None
        self._up.clear()
        await self._pubsub.aclose()

    # ------------------------------------------------------------------ publishing

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        """Into the history and out to every process; if Redis cannot take it, to this
        process's subscribers only.

        The script runs on the ordinary pool, so it is tried even while the pub/sub reader is
        reconnecting: an event accepted then is in the history (the catch-up delivers it to the
        other processes) and is handed to this process's subscribers directly."""
        data = validated(event)
        layout = self._layout
        keys = [layout.history_key(channel), layout.clock_key((channel,))]
        pattern_history = layout.pattern_history_key(channel)
        if pattern_history is not None:
            keys.append(pattern_history)
        try:
            result = await self._publish_script(
                keys=keys,
                args=[
                    layout.wire(channel), data, self._history_maxlen,
                    int(self._history_ttl * 1000), layout.publish_command,
                    self._history_maxlen * PATTERN_HISTORY_FACTOR,
                ],
            )
        except UNAVAILABLE as exc:
            if layout.sharded:
                # Ids come from a clock per slot on the shard: none can be made without it.
                raise ShardUnavailable(f"publish failed: shard unavailable: {exc!r}") from exc
            if not isinstance(exc, CONNECTION_LOST):
                raise BrokerError(f"publish failed: {exc}") from exc
            logger.debug("publish on %s reached only this process: %s", channel, exc)
        except RedisError as exc:
            raise BrokerError(f"publish failed: {exc}") from exc
        else:
            event_id = as_text(result)
            self.stats.published[event["type"]] += 1
            self._clock.observe(ids.parse(event_id))
            if not self.available:
                # The reader is not back yet: the catch-up after it would deliver this too;
                # delivering it now is not a duplicate, subscriptions drop ids already seen.
                self._fan_out_here(Event.build(event_id, channel, event, data))
            return event_id
        # Redis is away: this process's own subscribers still get the event.
        self._local_only_publishes += 1
        self.stats.published[event["type"]] += 1
        item = Event.build(self._clock.next(), channel, event, data)
        self._fan_out_here(item)
        return item.id

    async def position(self, channels: Iterable[str] = ()) -> str:
        if self.available:
            try:
                key = self._layout.clock_key(channels)
                current = as_text(await self._position_script(keys=[key]))
            except UNAVAILABLE:
                pass  # the newest id this process has seen will do
            else:
                if ids.is_event_id(current):
                    self._clock.observe(ids.parse(current))
        return self._clock.current

    async def subscribed_processes(self, channel: str) -> int:
        if not self.available:
            return await super().subscribed_processes(channel)
        wire = self._layout.wire(channel)
        command = "SHARDNUMSUB" if self._layout.sharded else "NUMSUB"
        try:
            reply = await self._pubsub_node.execute_command("PUBSUB", command, wire)
        except UNAVAILABLE as exc:
            raise BrokerError(f"subscriber count unavailable: {exc!r}") from exc
        # redis-py parses NUMSUB into [(channel, count)]; SHARDNUMSUB comes raw: [channel, count]
        return int(reply[0][1] if reply and isinstance(reply[0], (list, tuple)) else reply[1])

    async def last_event_id(self, channel: str) -> str | None:
        if not self.available:
            return None  # the history is in Redis: nothing to say while it is away
        try:
            newest = await self._redis.xrevrange(self._layout.history_key(channel), count=1)
        except UNAVAILABLE as exc:
            raise BrokerError(f"history unavailable: {exc!r}") from exc
        return as_text(newest[0][0]) if newest else None

    async def history(self, channels: Iterable[str], after: str) -> History:
        channels = list(dict.fromkeys(channels))
        key = ids.parse(after)
        if not self.available:
            return History([], complete=False)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    stream = self._layout.history_key(channel)
                    pipe.exists(stream)
                    pipe.xinfo_stream(stream)
                    pipe.xrange(stream, min=f"({after}")
                replies = await pipe.execute(raise_on_error=False)
        except UNAVAILABLE as exc:
            logger.warning("history unavailable: %r", exc)
            return History([], complete=False)
        per_channel: list[list[Event]] = []
        complete = key >= self._history_floor
        for i, channel in enumerate(channels):
            exists, info, entries = replies[3 * i : 3 * i + 3]
            if isinstance(entries, UNAVAILABLE):
                logger.warning("history unavailable: %r", entries)
                return History([], complete=False)
            if isinstance(entries, Exception):
                raise BrokerError(f"history read failed: {entries}")
            per_channel.append(self._decode_entries(channel, entries))
            complete = complete and self._reaches_back(exists, info, key)
        return History(merge(per_channel), complete)

    def _reaches_back(self, exists: object, info: object, key: tuple[int, int]) -> bool:
        """Whether a channel's history still holds every event after ``key``."""
        if not exists:
            # Never published, or expired after being idle for the TTL. An expired history
            # held no event newer than the TTL, so only an older position can have lost some.
            return key[0] >= (time.time() - self._history_ttl) * 1000
        if not isinstance(info, dict):
            return False
        # Trimming removes the oldest entries, all older than the first one kept. Redis 7 counts
        # entries ever added; without that count, a full history may have lost some.
        added, length = info.get("entries-added"), int(info.get("length", 0))
        removed_any = added > length if isinstance(added, int) else length >= self._history_maxlen
        if not removed_any:
            return True
        first = info.get("recorded-first-entry-id") or (info.get("first-entry") or [b"0-0"])[0]
        first_id = as_text(first)
        return ids.is_event_id(first_id) and ids.parse(first_id) <= key

    def _decode_entries(self, channel: str, entries: list[Any]) -> list[Event]:
        events = []
        for entry_id, fields in entries:
            data = fields.get(b"d", fields.get("d"))
            event = self._decode(channel, as_text(entry_id), data) if data is not None else None
            if event is not None:
                events.append(event)
        return events

    async def probe(self, channel: str, timeout: float) -> bool:
        # An event that came back only because Redis was away proves nothing about Redis.
        local_before = self._local_only_publishes
        try:
            delivered = await super().probe(channel, timeout)
        except (RedisError, *CONNECTION_LOST) as exc:
            logger.debug("readiness probe failed: %r", exc)
            return False
        return delivered and self._local_only_publishes == local_before

    # ------------------------------------------------------------------ subscribing

    async def _attach(self, subscription: Subscription) -> None:
        self._add_local(subscription)
        if not self.available:
            return  # served locally; re-subscribed and caught up when Redis is back
        try:
            await self._reconcile(subscription.subscribed)
            confirmations = [self._live[c] for c in subscription.subscribed if c in self._live]
            # asyncio.wait, not gather: the futures are shared with other joiners of the same
            # channels, and a cancelled or timed-out waiter must not cancel them for everyone.
            if confirmations:
                _, unconfirmed = await asyncio.wait(confirmations, timeout=self._subscribe_timeout)
                if unconfirmed:
                    raise TimeoutError("Redis did not confirm SUBSCRIBE in time")
        except CONNECTION_LOST as exc:
            self._mark_down(exc)  # keep the subscription: it is caught up when Redis is back
        except BaseException as exc:
            self._remove_local(subscription)
            await asyncio.shield(self._reconcile_quietly(subscription.subscribed))
            if isinstance(exc, (RedisError, TimeoutError)):
                raise BrokerError(f"subscribe failed: {exc!r}") from exc
            raise

    async def _detach(self, subscription: Subscription) -> None:
        self._remove_local(subscription)
        # Shielded: a stream cancelled while leaving must still release its channels.
        await asyncio.shield(self._reconcile_quietly(subscription.subscribed))

    async def _reconcile_quietly(self, channels: Iterable[str]) -> None:
        try:
            await self._reconcile(channels)
        except (RedisError, *CONNECTION_LOST) as exc:
            logger.warning("could not update pub/sub subscriptions: %s", exc)

    async def _reconcile(self, channels: Iterable[str]) -> None:
        """Make the connection subscribed to each of ``channels`` iff it has local subscribers.

        Every join and leave ends here for the channels it touched, under one lock, so whatever
        order they interleave in, no channel is left subscribed without subscribers or missing
        while it has some (and a join costs O(its channels), not O(all)). Without a connection
        only the bookkeeping changes; the resync after reconnecting does the rest.
        """
        async with self._lock:
            stale = [c for c in channels if c in self._live and c not in self._local]
            fresh = [c for c in channels if c in self._local and c not in self._live]
            for channel in stale:
                del self._live[channel]
            if self._closed or not self.available:
                return
            if stale:
                await self._unsubscribe_command(*map(self._layout.wire, stale))
            if fresh:
                await self._subscribe(fresh)

    async def _subscribe(self, channels: list[str]) -> None:
        """SUBSCRIBE, with a future per channel that the reader resolves on confirmation."""
        loop = asyncio.get_running_loop()
        for channel in channels:
            confirmation = loop.create_future()
            self._live[channel] = confirmation
            self._pending.setdefault(channel, deque()).append(confirmation)
        try:
            await self._subscribe_command(*map(self._layout.wire, channels))
        except BaseException as exc:
            for channel in channels:
                self._forget(channel, exc)
            raise

    async def _subscribe_command(self, *wires: str) -> None:
        patterns = [w for w in wires if is_pattern(w)]
        channels = [w for w in wires if not is_pattern(w)]
        if patterns:
            await self._pubsub.psubscribe(*patterns)
        if channels and self._layout.sharded:
            await self._pubsub.ssubscribe(*channels)
        elif channels:
            await self._pubsub.subscribe(*channels)

    async def _unsubscribe_command(self, *wires: str) -> None:
        patterns = [w for w in wires if is_pattern(w)]
        channels = [w for w in wires if not is_pattern(w)]
        if patterns:
            await self._pubsub.punsubscribe(*patterns)
        if channels and self._layout.sharded:
            self._leaving.update(map(self._layout.logical, channels))
            await self._pubsub.sunsubscribe(*channels)
        elif channels:
            await self._pubsub.unsubscribe(*channels)

    def _forget(self, channel: str, exc: BaseException) -> None:
        confirmation = self._live.pop(channel, None)
        if confirmation is None:
            return
        pending = self._pending.get(channel)
        if pending is not None and confirmation in pending:
            pending.remove(confirmation)
        if not confirmation.done():
            confirmation.set_exception(BrokerError(f"subscribe to {channel} failed: {exc!r}"))
            confirmation.exception()  # retrieved: the waiter may already be gone

    def _confirm(self, channel: str) -> None:
        pending = self._pending.get(channel)
        if not pending:
            return
        confirmation = pending.popleft()
        if not pending:
            del self._pending[channel]
        if not confirmation.done():
            confirmation.set_result(None)

    # ------------------------------------------------------------------ the connection

    def _on_connect(self, connection: object) -> None:
        """Called by redis-py whenever the pub/sub connection is (re)established."""
        self._needs_resync = True

    def _mark_down(self, exc: BaseException) -> None:
        if not self.available:
            return
        self._up.clear()
        logger.warning("Redis pub/sub connection lost (%s): serving this process only", exc)
        # Waiters for confirmations go on locally; the resync subscribes their channels again.
        for pending in self._pending.values():
            for confirmation in pending:
                if not confirmation.done():
                    confirmation.set_result(None)
        self._pending.clear()
        self._leaving.clear()
        self._live.clear()

    async def _connect(self) -> None:
        if self._pubsub.connection is None:
            await self._pubsub.connect()
            connection = self._pubsub.connection
            assert connection is not None
            # Reconnecting is the reader's job: redis-py retrying inside a read would reconnect
            # behind its back, and the re-subscription would wait for the next read timeout.
            connection.retry = Retry(NoBackoff(), 0)
            # Re-subscribing is ours (see _resync): redis-py's own would answer SUBSCRIBEs
            # nobody waits for, which confirmations could be mistaken for.
            connection.deregister_connect_callback(self._pubsub.on_connect)
            connection.register_connect_callback(self._on_connect)
            self._needs_resync = True
        else:
            await self._pubsub.connect()
        if self._needs_resync or not self.available:
            await self._resync()

    async def _resync(self) -> None:
        """After (re)connecting: move the clock past every id this process has seen or made,
        subscribe every channel with local subscribers, and catch the subscriptions up."""
        self._needs_resync = False
        seen = ids.parse(self._clock.current)
        if self._layout.sharded:
            seen = (0, 0)  # clocks per slot, and no local ids made while away: nothing to move
        if seen > (0, 0):
            before = await self._advance_clock_script(keys=[CLOCK_KEY], args=[seen[0], seen[1]])
        if seen > (0, 0) and (before is None or ids.parse(as_text(before)) < seen):
            self._history_floor = max(self._history_floor, seen)
            logger.warning(
                "Redis has no history up to %s (restarted without persistence, or this "
                "process published while it was away): older positions resume incomplete",
                self._clock.current,
            )
        async with self._lock:
            self._live.clear()
            self._pending.clear()
            self._leaving.clear()
            channels = list(self._local)
            if channels:
                await self._subscribe(channels)
            confirmations = list(self._live.values())
        self.stats.reconnects += 1
        self._up.set()
        logger.info("Redis pub/sub connected: %d channels subscribed", len(channels))
        task = asyncio.create_task(self._catch_up_all(confirmations), name="redis-catch-up")
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _catch_up_all(self, confirmations: list[asyncio.Future[None]]) -> None:
        """Once the channels are live again, fill each subscription's gap from the history."""
        if confirmations:
            await asyncio.wait(confirmations, timeout=self._subscribe_timeout)
        subscriptions = self._subscriptions()
        for subscription in subscriptions:
            try:
                await subscription.catch_up()
            except (BrokerError, RedisError, *DISCONNECTED) as exc:
                # Neither caught up nor live-only: end it, and its client resumes from the
                # last event it got (by the history, once Redis answers again).
                logger.warning("could not catch a stream up after reconnecting (%s): ending it", exc)
                subscription.end_with_gap()
        if subscriptions:
            logger.info("caught up %d streams after reconnecting", len(subscriptions))

    async def _read_loop(self) -> None:
        failures = 0
        last_traffic = time.monotonic()
        # Checked, not only cancelled: redis-py may turn a cancellation that lands inside one of
        # its reads into a ConnectionError, which this loop would otherwise take for an outage.
        while not self._closed:
            try:
                if not self.available or self._needs_resync:
                    await self._connect()
                    last_traffic = time.monotonic()
                message = await self._pubsub.get_message(timeout=self._liveness_interval)
                if self._needs_resync:
                    await self._resync()
                if message is None:
                    last_traffic = await self._check_liveness(last_traffic)
                    continue
                last_traffic = time.monotonic()
                failures = 0
            except asyncio.CancelledError:
                raise
            except DISCONNECTED as exc:
                failures += 1
                self._mark_down(exc)
                await asyncio.sleep(self._backoff(failures))
                continue
            except Exception as exc:
                failures += 1
                logger.exception("pub/sub reader failed; reconnecting")
                self._mark_down(exc)
                await asyncio.sleep(self._backoff(failures))
                continue
            try:
                self._on_message(message)
            except Exception:
                # Nothing one message holds may stop the reader: every stream depends on it.
                self.stats.malformed += 1
                logger.exception("dropped a message that could not be handled")

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with full jitter (so processes do not reconnect in step)."""
        return random.uniform(0.05, min(self._max_backoff, 0.1 * 2 ** min(failures, 8)))

    async def _check_liveness(self, last_traffic: float) -> float:
        """On a quiet connection, PING; a connection silent for three intervals is dead (a
        half-open TCP connection never errors by itself), so drop it and reconnect."""
        if not self._live:
            return time.monotonic()  # nothing to lose; the next SUBSCRIBE tests the connection
        silent = time.monotonic() - last_traffic
        if silent > 3 * self._liveness_interval:
            connection = self._pubsub.connection
            if connection is not None:
                await connection.disconnect(nowait=True)
            raise RedisConnectionError(f"no answer from Redis for {silent:.0f} s")
        await self._pubsub.ping("switchboard")
        return last_traffic

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("message", "smessage", "pmessage"):
            channel = self._layout.logical(as_text(message["channel"]))
            raw = message["data"]
            try:
                text = as_text(raw)
            except UnicodeDecodeError:
                logger.warning("dropped a message that is not UTF-8 on %s", channel)
                self.stats.malformed += 1
                return
            event_id, _, data = text.partition(" ")
            event = self._decode(channel, event_id, data)
            if event is None:
                self.stats.malformed += 1
                return
            self._clock.observe(event.key)
            # A pattern's message goes to that pattern's subscriptions only: the channel's
            # own subscriptions get the same event as a plain message.
            self._fan_out(event, to=as_text(message["pattern"]) if kind == "pmessage" else None)
        elif kind in ("subscribe", "ssubscribe"):
            self._confirm(self._layout.logical(as_text(message["channel"])))
        elif kind == "psubscribe":
            self._confirm(as_text(message["channel"]))
        elif kind == "sunsubscribe":
            self._dropped_by_server(self._layout.logical(as_text(message["channel"])))

    def _dropped_by_server(self, channel: str) -> None:
        """A cluster unsubscribes a shard channel whose slot moved to another node; streams
        on it are ended to reconnect (and resume) on the channel's new home. Our own
        SUNSUBSCRIBE confirmations are told apart by ``_leaving``."""
        if self._leaving[channel] > 0:
            self._leaving[channel] -= 1
            if not self._leaving[channel]:
                del self._leaving[channel]
            return
        if channel not in self._live or self._closed:
            return
        del self._live[channel]
        logger.warning("Redis moved %s away: ending its streams so that they resume", channel)
        for subscription in tuple(self._local.get(channel, ())):
            subscription.end_with_gap()

    def _decode(self, channel: str, event_id: str, data: str | bytes) -> Event | None:
        if not ids.is_event_id(event_id):
            logger.warning("dropped a message without an event id on %s", channel)
            return None
        if ids.parse(event_id)[0] > time.time() * 1000 + MAX_ID_LEAD_MS:
            logger.warning("dropped a message with an id from the future on %s", channel)
            return None
        try:
            text = as_text(data)
            envelope = json.loads(text)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            logger.warning("dropped a message that is not JSON on %s", channel)
            return None
        errors = validate_event(envelope)
        if errors:
            logger.warning("dropped a malformed event on %s: %s", channel, errors)
            return None
        return Event.build(event_id, channel, envelope, text)


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value

