"""Redis broker: one pub/sub connection per process, however many streams are open.

Channels are SUBSCRIBEd when their first local subscriber arrives and UNSUBSCRIBEd when the
last one leaves; one reader task reads the connection and fans each event out to the local
subscriptions. Publishing goes through the ordinary connection pool: a Lua script takes the next
id from the event clock, appends the event to the channel's history stream under that id (XADD)
and PUBLISHes it, in one atomic step, so the id on the wire and in the history are the same.
"""

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime import ids
from realtime.broker import Broker, BrokerError, Subscription
from realtime.events import Event, validated
from schemas.envelope import validate_event

logger = logging.getLogger(__name__)

HISTORY_PREFIX = "history:"

CLOCK_KEY = "events:clock"

# KEYS[1] the channel's history stream, KEYS[2] the event clock; ARGV: channel, data, maxlen,
# ttl (ms). The id is max(now, last + 1) on one clock for all channels, so ids are unique and
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
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[2])
return id
"""


def history_key(channel: str) -> str:
    return HISTORY_PREFIX + channel


class RedisBroker(Broker):
    name = "redis"

    def __init__(
        self,
        redis: Redis,
        *,
        history_maxlen: int = 1000,
        history_ttl: float = 3600.0,
        subscribe_timeout: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._redis = redis
        self._history_maxlen = history_maxlen
        self._history_ttl_ms = int(history_ttl * 1000)
        self._subscribe_timeout = subscribe_timeout
        self._publish_script = redis.register_script(PUBLISH_SCRIPT)
        self._pubsub = redis.pubsub()
        self._lock = asyncio.Lock()
        # Channels we have sent SUBSCRIBE for, each with the future its confirmation resolves.
        self._live: dict[str, asyncio.Future[None]] = {}
        # Confirmations still owed by Redis, per channel, in the order SUBSCRIBEs were sent.
        self._pending: dict[str, deque[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0

    async def start(self) -> None:
        """Open the pub/sub connection and start the reader; raises if Redis is unreachable."""
        await self._pubsub.connect()
        self._reader = asyncio.create_task(self._read_loop(), name="redis-broker-reader")

    async def close(self) -> None:
        await super().close()
        # Under the lock, so UNSUBSCRIBEs already under way finish first; once closed,
        # subscriptions that leave only update the bookkeeping (see _reconcile).
        async with self._lock:
            self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("pub/sub reader had failed")
            self._reader = None
        await self._pubsub.aclose()

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        data = validated(event)
        try:
            result = await self._publish_script(
                keys=[history_key(channel), CLOCK_KEY],
                args=[channel, data, self._history_maxlen, self._history_ttl_ms],
            )
        except RedisError as exc:
            raise BrokerError(f"publish failed: {exc}") from exc
        return result.decode() if isinstance(result, bytes) else str(result)

    async def last_id(self, channels: Iterable[str]) -> str:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.xrevrange(history_key(channel), count=1)
                results = await pipe.execute()
        except RedisError as exc:
            raise BrokerError(f"history lookup failed: {exc}") from exc
        found = [_text(entries[0][0]) for entries in results if entries]
        return ids.latest(found)

    async def _attach(self, subscription: Subscription) -> None:
        self._add_local(subscription)
        try:
            await self._reconcile(subscription.channels)
            confirmations = [self._live[channel] for channel in subscription.channels]
            # asyncio.wait, not gather: the futures are shared with other joiners of the same
            # channels, and a cancelled or timed-out waiter must not cancel them for everyone.
            _, unconfirmed = await asyncio.wait(confirmations, timeout=self._subscribe_timeout)
            if unconfirmed:
                raise TimeoutError("Redis did not confirm SUBSCRIBE in time")
            for confirmation in confirmations:
                confirmation.result()  # raises the BrokerError of a failed SUBSCRIBE
        except BaseException as exc:
            self._remove_local(subscription)
            await asyncio.shield(self._reconcile_quietly(subscription.channels))
            if isinstance(exc, (RedisError, TimeoutError, KeyError)):
                raise BrokerError(f"subscribe failed: {exc!r}") from exc
            raise

    async def _detach(self, subscription: Subscription) -> None:
        self._remove_local(subscription)
        # Shielded: a stream cancelled while leaving must still release its channels.
        await asyncio.shield(self._reconcile_quietly(subscription.channels))

    async def _reconcile_quietly(self, channels: tuple[str, ...]) -> None:
        try:
            await self._reconcile(channels)
        except RedisError as exc:
            logger.warning("could not update pub/sub subscriptions: %s", exc)

    async def _reconcile(self, channels: tuple[str, ...]) -> None:
        """Make the connection subscribed to each of ``channels`` iff it has local subscribers.

        Every join and leave ends here for the channels it touched, under one lock, so whatever
        order they interleave in, no channel is left subscribed without subscribers or missing
        while it has some.
        """
        async with self._lock:
            stale = [c for c in channels if c in self._live and c not in self._local]
            fresh = [c for c in channels if c in self._local and c not in self._live]
            if self._closed:
                if fresh:
                    raise BrokerError("broker is closed")
                for channel in stale:
                    del self._live[channel]
                return
            if stale:
                for channel in stale:
                    del self._live[channel]
                await self._pubsub.unsubscribe(*stale)
            if fresh:
                loop = asyncio.get_running_loop()
                for channel in fresh:
                    confirmation = loop.create_future()
                    self._live[channel] = confirmation
                    self._pending.setdefault(channel, deque()).append(confirmation)
                try:
                    await self._pubsub.subscribe(*fresh)
                except BaseException as exc:
                    for channel in fresh:
                        self._forget(channel, exc)
                    raise

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
            return  # a re-subscription after a reconnect: nobody is waiting
        confirmation = pending.popleft()
        if not pending:
            del self._pending[channel]
        if not confirmation.done():
            confirmation.set_result(None)

    async def _read_loop(self) -> None:
        failures = 0
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                if failures == 1:
                    logger.warning("pub/sub connection lost (%s); reconnecting", exc)
                await asyncio.sleep(delay)
                continue
            except Exception:
                failures += 1
                logger.exception("pub/sub reader failed; retrying")
                await asyncio.sleep(min(5.0, 0.1 * failures))
                continue
            if failures:
                logger.info("pub/sub connection back after %d failed reads", failures)
                failures = 0
            if message is None:
                continue
            try:
                self._on_message(message)
            except Exception:
                # Nothing one message holds may stop the reader: every stream depends on it.
                self.dropped += 1
                logger.exception("dropped a message that could not be handled")

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            channel = _text(message["channel"])
            event = self._decode(channel, message["data"])
            if event is None:
                self.dropped += 1
                return
            self._fan_out(event)
        elif kind == "subscribe":
            self._confirm(_text(message["channel"]))

    def _decode(self, channel: str, raw: bytes | str) -> Event | None:
        try:
            text = _text(raw)
        except UnicodeDecodeError:
            logger.warning("dropped a message that is not UTF-8 on %s", channel)
            return None
        event_id, _, data = text.partition(" ")
        if not ids.is_event_id(event_id):
            logger.warning("dropped a message without an event id on %s", channel)
            return None
        try:
            envelope = json.loads(data)
        except (ValueError, RecursionError):
            logger.warning("dropped a message that is not JSON on %s", channel)
            return None
        errors = validate_event(envelope)
        if errors:
            logger.warning("dropped a malformed event on %s: %s", channel, errors)
            return None
        return Event.build(event_id, channel, envelope, data)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
