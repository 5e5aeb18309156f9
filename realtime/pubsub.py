"""The process's pub/sub connection to one Redis (or one cluster primary), however many streams
are open.

Channels are SUBSCRIBEd when their first local subscriber arrives and UNSUBSCRIBEd when the
last one leaves; the connection's socket (realtime.pubsub_wire) hands each message over as it
arrives, decoded here once for the local fan-out, and one reader task keeps the connection.
Redis may be away, at start or for a while: the reader reconnects with capped, jittered
backoff, and meanwhile subscriptions are registered locally. When the connection is
back, every channel with local subscribers is re-subscribed and every subscription is caught up
from the history, so a stream open across the outage misses nothing the history still holds
(and is ended, to resume with ``recovered: false``, if it does not).
"""

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from realtime.channels import is_pattern
from realtime.errors import BrokerError
from realtime.event_log import RedisEventLog, decode, decode_ephemeral
from realtime.events import EPHEMERAL_ID
from realtime.fanout import FanOut
from realtime.pubsub_wire import WireFactory, pubsub_wire
from realtime.redis_replies import CONNECTION_LOST, DISCONNECTED, UNAVAILABLE, as_text
from realtime.stats import BrokerStats
from realtime.subscribed_channels import SubscribedChannels
from realtime.subscription import Subscription

logger = logging.getLogger(__name__)


class PubSubConnection:
    """One pub/sub connection and its reader, for the subscriptions of one fan-out.

    Its commands, wire names and clock come from the event log's layout: plain pub/sub on one
    Redis, sharded pub/sub (SSUBSCRIBE) on a cluster node, chosen once, here.
    """

    def __init__(
        self,
        client: Redis,
        log: RedisEventLog,
        fan_out: FanOut,
        stats: BrokerStats,
        *,
        subscribe_timeout: float = 5.0,
        liveness_interval: float = 5.0,
        max_backoff: float = 2.0,
        wire: WireFactory = pubsub_wire,
    ) -> None:
        """The connection comes from ``client``, a plain client of the node (PUBSUB NUMSUB /
        SHARDNUMSUB go to it too: they count the node's own subscribers), through ``wire``
        (our hiredis socket where it can serve the client; the benchmark's baseline keeps
        redis-py's)."""
        self._client = client
        self._pubsub = wire(client, self._on_reply, self._on_connect)
        self._log = log
        self._clock = log.clock
        self._fan_out = fan_out
        self._deliver = fan_out.deliver
        self._stats = stats
        layout = log.layout
        self._wire = layout.wire
        self._logical = layout.logical
        self._sharded = layout.sharded
        self._count_command = "SHARDNUMSUB" if layout.sharded else "NUMSUB"
        self._subscribe_timeout = subscribe_timeout
        self._liveness_interval = liveness_interval
        self._max_backoff = max_backoff
        self._lock = asyncio.Lock()
        self._subscribed = SubscribedChannels()
        self._up = asyncio.Event()
        self._needs_resync = False
        self._reader: asyncio.Task[None] | None = None
        self._recoveries: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def available(self) -> bool:
        return self._up.is_set()

    async def start(self, wait: float = 0.0) -> bool:
        """Start the reader; wait up to ``wait`` seconds for Redis. Returns whether it is up."""
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
        await self._pubsub.close()

    async def subscribers(self, channel: str) -> int:
        """How many pub/sub connections of the node hold ``channel``: one per process."""
        command = ("PUBSUB", self._count_command, self._wire(channel))
        try:
            reply = await self._client.execute_command(*command)  # type: ignore[no-untyped-call]  # unannotated in redis-py
        except UNAVAILABLE as exc:
            raise BrokerError(f"subscriber count unavailable: {exc!r}") from exc
        # redis-py parses NUMSUB into [(channel, count)]; SHARDNUMSUB comes raw: [channel, count]
        return int(reply[0][1] if reply and isinstance(reply[0], (list, tuple)) else reply[1])

    # ------------------------------------------------------------------ subscribing

    async def join(self, subscription: Subscription) -> None:
        """Register the subscription and return once Redis has confirmed its channels; while
        Redis is away it is served locally (re-subscribed and caught up when Redis is back)."""
        self._fan_out.add(subscription)
        if not self.available:
            return
        try:
            await self._reconcile(subscription.subscribed)
            confirmations = self._subscribed.confirmations(subscription.subscribed)
            # asyncio.wait, not gather: the futures are shared with other joiners of the same
            # channels, and a cancelled or timed-out waiter must not cancel them for everyone.
            if confirmations:
                _, unconfirmed = await asyncio.wait(confirmations, timeout=self._subscribe_timeout)
                if unconfirmed:
                    raise TimeoutError("Redis did not confirm SUBSCRIBE in time")
        except CONNECTION_LOST as exc:
            self._mark_down(exc)  # keep the subscription: it is caught up when Redis is back
        except BaseException as exc:
            self._fan_out.remove(subscription)
            await asyncio.shield(self._reconcile_quietly(subscription.subscribed))
            if isinstance(exc, (RedisError, TimeoutError)):
                raise BrokerError(f"subscribe failed: {exc!r}") from exc
            raise

    async def leave(self, subscription: Subscription) -> None:
        self._fan_out.remove(subscription)
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
            local, subscribed = self._fan_out, self._subscribed
            stale = [c for c in channels if c in subscribed and c not in local]
            fresh = [c for c in channels if c in local and c not in subscribed]
            for channel in stale:
                subscribed.discard(channel)
            if self._closed or not self.available:
                return
            if stale:
                await self._unsubscribe_command(*map(self._wire, stale))
            if fresh:
                await self._subscribe(fresh)

    async def _subscribe(self, channels: list[str]) -> None:
        """SUBSCRIBE, with a future per channel that the reader resolves on confirmation."""
        self._subscribed.expect(channels)
        try:
            await self._subscribe_command(*map(self._wire, channels))
        except BaseException as exc:
            for channel in channels:
                self._subscribed.forget(channel, exc)
            raise

    async def _subscribe_command(self, *wires: str) -> None:
        patterns = [w for w in wires if is_pattern(w)]
        channels = [w for w in wires if not is_pattern(w)]
        if patterns:
            await self._pubsub.send("PSUBSCRIBE", *patterns)
        if channels:
            await self._pubsub.send("SSUBSCRIBE" if self._sharded else "SUBSCRIBE", *channels)

    async def _unsubscribe_command(self, *wires: str) -> None:
        patterns = [w for w in wires if is_pattern(w)]
        channels = [w for w in wires if not is_pattern(w)]
        if patterns:
            await self._pubsub.send("PUNSUBSCRIBE", *patterns)
        if channels and self._sharded:
            # Noting the confirmations to expect (see _dropped_by_server).
            self._subscribed.leaving(map(self._logical, channels))
            await self._pubsub.send("SUNSUBSCRIBE", *channels)
        elif channels:
            await self._pubsub.send("UNSUBSCRIBE", *channels)

    # ------------------------------------------------------------------ the connection

    def _on_connect(self) -> None:
        """Called by the wire whenever the pub/sub connection is (re)established."""
        self._needs_resync = True

    def _mark_down(self, exc: BaseException) -> None:
        if not self.available:
            return
        self._up.clear()
        logger.warning("Redis pub/sub connection lost (%s): serving this process only", exc)
        # Waiters for confirmations go on locally; the resync subscribes their channels again.
        self._subscribed.release()

    async def _connect(self) -> None:
        await self._pubsub.connect()  # a new connection calls _on_connect
        if self._needs_resync or not self.available:
            await self._resync()

    async def _resync(self) -> None:
        """After (re)connecting: move the clock past every id this process has seen or made,
        subscribe every channel with local subscribers, and catch the subscriptions up."""
        self._needs_resync = False
        await self._log.advance_clock()
        async with self._lock:
            self._subscribed.clear()
            channels = self._fan_out.channels()
            if channels:
                await self._subscribe(channels)
            confirmations = self._subscribed.confirmations()
        self._stats.reconnects += 1
        self._up.set()
        logger.info("Redis pub/sub connected: %d channels subscribed", len(channels))
        task = asyncio.create_task(self._catch_up_all(confirmations), name="redis-catch-up")
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _catch_up_all(self, confirmations: list[asyncio.Future[None]]) -> None:
        """Once the channels are live again, fill each subscription's gap from the history."""
        if confirmations:
            await asyncio.wait(confirmations, timeout=self._subscribe_timeout)
        subscriptions = self._fan_out.subscriptions()
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
        """Connect, keep the connection, reconnect; messages are handed over by the wire as
        they arrive (``_on_reply``), so this task wakes only when the connection falls quiet
        or fails (on redis-py's PubSub, for every message)."""
        failures = 0
        last_traffic = time.monotonic()
        interval = self._liveness_interval
        # Checked, not only cancelled: redis-py may turn a cancellation that lands inside one of
        # its reads into a ConnectionError, which this loop would otherwise take for an outage.
        while not self._closed:
            try:
                if not self.available or self._needs_resync:
                    await self._connect()
                    last_traffic = time.monotonic()
                heard = self._pubsub.heard
                quiet = time.monotonic() - last_traffic
                # Back when the connection has been quiet for an interval, or at once on a failure.
                await self._pubsub.pump(interval - quiet if quiet < interval else interval)
                if self._needs_resync:
                    await self._resync()
                if self._pubsub.heard == heard:
                    last_traffic = await self._check_liveness(last_traffic)
                    continue
                last_traffic = self._pubsub.heard
                failures = 0
            except asyncio.CancelledError:
                raise
            except DISCONNECTED as exc:
                failures += 1
                self._mark_down(exc)
                await asyncio.sleep(self._backoff(failures))
            except Exception as exc:
                failures += 1
                logger.exception("pub/sub reader failed; reconnecting")
                self._mark_down(exc)
                await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with full jitter (so processes do not reconnect in step)."""
        return random.uniform(0.05, min(self._max_backoff, 0.1 * 2 ** min(failures, 8)))

    async def _check_liveness(self, last_traffic: float) -> float:
        """On a quiet connection, PING; a connection silent for three intervals is dead (a
        half-open TCP connection never errors by itself), so drop it and reconnect. One with
        nothing subscribed too: Redis's ``timeout`` closes an idle client that is not
        subscribed, and a process with no streams open would reconnect (and warn) that often."""
        silent = time.monotonic() - last_traffic
        if silent > 3 * self._liveness_interval:
            await self._pubsub.drop()
            raise RedisConnectionError(f"no answer from Redis for {silent:.0f} s")
        await self._pubsub.ping()
        return last_traffic

    def _on_reply(self, reply: list[Any]) -> None:
        """One reply off the connection as RESP has it, in the order they came: ``[kind,
        channel, data]``, a pattern's message ``[kind, pattern, channel, data]``. Nothing one
        message holds may stop the others: every stream depends on the reader."""
        try:
            kind = reply[0]
            if kind == b"message" or kind == b"smessage":
                self._on_message(reply[1], reply[2], None)
            elif kind == b"pmessage":
                # A pattern's message goes to that pattern's subscriptions only: the channel's
                # own subscriptions get the same event as a plain message.
                self._on_message(reply[2], reply[3], self._logical(as_text(reply[1])))
            elif kind == b"subscribe" or kind == b"ssubscribe" or kind == b"psubscribe":
                self._subscribed.confirm(self._logical(as_text(reply[1])))
            elif kind == b"sunsubscribe":
                self._dropped_by_server(self._logical(as_text(reply[1])))
        except Exception:
            self._stats.malformed += 1
            logger.exception("dropped a message that could not be handled")

    def _on_message(self, wire: bytes | str, raw: bytes | str, pattern: str | None) -> None:
        channel = self._logical(as_text(wire))
        try:
            text = as_text(raw)
        except UnicodeDecodeError:
            logger.warning("dropped a message that is not UTF-8 on %s", channel)
            self._stats.malformed += 1
            return
        event_id, _, data = text.partition(" ")
        if event_id == EPHEMERAL_ID:
            ephemeral = decode_ephemeral(channel, data)
            if ephemeral is None:
                self._stats.malformed += 1
            else:
                self._deliver(ephemeral, to=pattern)
            return
        event = decode(channel, event_id, data)
        if event is None:
            self._stats.malformed += 1
            return
        self._clock.observe(event.key)
        self._deliver(event, to=pattern)

    def _dropped_by_server(self, channel: str) -> None:
        """A cluster unsubscribes a shard channel whose slot moved to another node; streams
        on it are ended to reconnect (and resume) on the channel's new home. Our own
        SUNSUBSCRIBE confirmations are told apart (see SubscribedChannels)."""
        if self._closed or not self._subscribed.dropped_by_server(channel):
            return
        logger.warning("Redis moved %s away: ending its streams so that they resume", channel)
        for subscription in self._fan_out.subscriptions_of(channel):
            subscription.end_with_gap()
