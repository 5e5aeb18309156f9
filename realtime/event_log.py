"""The event log on Redis: event ids, each channel's history, and publishing into both.

Publishing is one Lua script on the ordinary connection pool: it takes the next id from the
event clock, appends the event to the channel's history stream under that id (XADD) and
PUBLISHes it, in one atomic step, so the id on the wire and in the history are the same. The
histories are what resumes and catch-ups read. Which keys and which publish command are used
comes from the layout (realtime.layout): one clock for all channels on one Redis, one per slot
tag on a cluster.

The log also keeps the newest id this process has seen (published, read or received): it
answers for the position while Redis cannot, gives ids to events published while Redis is
away, and tells, after a reconnect, whether Redis lost data.
"""

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from realtime import ids
from realtime.cluster_pipes import ClusterPipes
from realtime.command_pipe import PipeScript
from realtime.errors import BrokerError
from realtime.event_script import EVENTS_LUA, RELAYED_PUBLISH_SCRIPT, EventKeys
from realtime.events import EPHEMERAL_ID, EPHEMERAL_TYPES, Event
from realtime.history import HISTORY_BYTES, History, merge
from realtime.layout import Layout
from realtime.redis_replies import UNAVAILABLE, as_text
from schemas.envelope import validate_event

logger = logging.getLogger(__name__)

# An id this far ahead of this host's clock did not come from the publish script (Redis' TIME
# would have to be wrong by as much): accepting it would make every subscription that saw it
# drop all genuine events until the clock caught up.
MAX_ID_LEAD_MS = 10 * 60 * 1000

# One event through the shared section of realtime.event_script: the channel's history, its
# size, the clock (and the pattern history with its size) are its keys.
PUBLISH_SCRIPT = EVENTS_LUA + "return publish_events(0, 0)[1]\n"
RELAYED_PUBLISH = PipeScript.of(RELAYED_PUBLISH_SCRIPT)

# KEYS[1] the event clock; ARGV[1] ms, ARGV[2] seq: the newest id this process has seen or
# made; ARGV[3] the clock's lifetime (ms). Moves the clock forward to it if behind, and returns the clock as it was: a clock
# behind what a process has seen means Redis lost data (a restart without persistence).
# An ephemeral event (realtime.events.EPHEMERAL_ID): published with no id and kept nowhere.
# KEYS[1] is the channel's history, which it does not touch: it routes the call to the slot of
# the channel (a cluster's SPUBLISH must run there). ARGV: the publish command, the wire
# channel, the message.
SIGNAL_SCRIPT = "return redis.call(ARGV[1], ARGV[2], ARGV[3])"

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
  redis.call('SET', KEYS[1], ARGV[1] .. '-' .. ARGV[2], 'PX', ARGV[3])
end
return last
"""


# KEYS[1] the event clock; ARGV[1] its lifetime (ms). Starts the clock at the current time if it
# has never run, so that a position is always a real moment (a history's age can then be
# judged against it).
POSITION_SCRIPT = """
local last = redis.call('GET', KEYS[1])
if last then
  return last
end
local now = redis.call('TIME')
local id = string.format('%.0f-0', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
redis.call('SET', KEYS[1], id, 'PX', ARGV[1])
return id
"""


class RedisEventLog:
    """Ids and histories of the channels of one layout, on one Redis or through a cluster client."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        layout: Layout,
        *,
        history_maxlen: int = 1000,
        history_ttl: float = 3600.0,
        history_bytes: int = HISTORY_BYTES,
    ) -> None:
        self.layout = layout
        self._redis = redis
        self._history_maxlen = history_maxlen
        self._history_bytes = history_bytes
        self._history_ttl = history_ttl
        self._ttl_ms = int(history_ttl * 1000)  # of histories, their sizes and the clocks
        self.keys = EventKeys(layout, history_maxlen, history_bytes, self._ttl_ms)
        self._publish_script = redis.register_script(PUBLISH_SCRIPT)
        self._advance_clock_script = redis.register_script(ADVANCE_CLOCK_SCRIPT)
        self._signal_script = redis.register_script(SIGNAL_SCRIPT)
        self._position_script = redis.register_script(POSITION_SCRIPT)
        # The newest id seen or made; ids for events published while Redis is away come just
        # above it.
        self.clock = ids.IdClock(follow_time=False)
        # Resumes from before this id cannot be complete: Redis lost its history (or never
        # had the events this process published while it was away).
        self._history_floor = (0, 0)

    async def append(self, channel: str, data: str) -> str:
        """Give the event (encoded as ``data``) the next id, add it to the channel's history
        and publish it, in one step; returns the id. Raises redis-py's errors as they come:
        what an outage means is the broker's call."""
        section = self.keys.section([(channel, data)])
        result = await self._publish_script(keys=section.keys, args=section.args)
        event_id = as_text(result)
        self.clock.observe(ids.parse(event_id))
        return event_id

    async def signal(self, channel: str, data: str) -> None:
        """Publish an ephemeral event to whoever listens now, on every process (no id, no
        history); raises redis-py's errors as they come."""
        layout = self.layout
        await self._signal_script(
            keys=[layout.history_key(channel)],
            args=[layout.publish_command, layout.wire(channel), f"{EPHEMERAL_ID} {data}"],
        )

    async def append_relayed(
        self, pipes: ClusterPipes, channel: str, data: str, mark_key: str, entry_id: str
    ) -> str | None:
        """As ``append``, for the outbox entry ``entry_id`` of a session whose mark on this
        channel's slot is ``mark_key`` (a cluster's: through the slot owner's pipe), or None
        if that entry (or a newer one) is out already."""
        section = self.keys.section([(channel, data)])
        result = await pipes.run_script(
            RELAYED_PUBLISH, [mark_key, *section.keys], [entry_id, self._ttl_ms, *section.args]
        )
        if result is None:
            return None
        event_id = as_text(result)
        self.clock.observe(ids.parse(event_id))
        return event_id

    async def position(self, channels: Iterable[str]) -> str:
        """The clock of ``channels`` (started now if it never ran); if Redis cannot answer,
        the newest id this process has seen."""
        try:
            key = self.layout.clock_key(channels)
            current = as_text(await self._position_script(keys=[key], args=[self._ttl_ms]))
        except UNAVAILABLE:
            pass  # the newest id this process has seen will do
        else:
            if ids.is_event_id(current):
                self.clock.observe(ids.parse(current))
        return self.clock.current

    async def advance_clock(self) -> None:
        """After a reconnect: move the shared clock past every id this process has seen or
        made. A clock found behind them means Redis lost data: older positions resume
        incomplete from now on."""
        clock_key = self.layout.shared_clock_key
        seen = ids.parse(self.clock.current)
        if clock_key is None or seen == (0, 0):
            return
        before = await self._advance_clock_script(keys=[clock_key], args=[seen[0], seen[1], self._ttl_ms])
        if before is None or ids.parse(as_text(before)) < seen:
            self._history_floor = max(self._history_floor, seen)
            logger.warning(
                "Redis has no history up to %s (restarted without persistence, or this "
                "process published while it was away): older positions resume incomplete",
                self.clock.current,
            )

    async def last_event_id(self, channel: str) -> str | None:
        try:
            newest = await self._redis.xrevrange(self.layout.history_key(channel), count=1)
        except UNAVAILABLE as exc:
            raise BrokerError(f"history unavailable: {exc!r}") from exc
        newest_id = newest[0][0] if newest else None
        return as_text(newest_id) if newest_id is not None else None

    async def history(self, channels: Iterable[str], after: str) -> History:
        channels = list(dict.fromkeys(channels))
        key = ids.parse(after)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    stream = self.layout.history_key(channel)
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
            per_channel.append(_decode_entries(channel, entries))
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


def _decode_entries(channel: str, entries: list[Any]) -> list[Event]:
    events = []
    for entry_id, fields in entries:
        data = fields.get(b"d", fields.get("d"))
        event = decode(channel, as_text(entry_id), data) if data is not None else None
        if event is not None:
            events.append(event)
    return events


def decode_ephemeral(channel: str, data: str) -> Event | None:
    """An ephemeral event off the wire (realtime.events.EPHEMERAL_ID), or None unless it is a
    well-formed event of a type that may be ephemeral."""
    try:
        envelope = orjson.loads(data)
    except ValueError:
        logger.warning("dropped an ephemeral message that is not JSON on %s", channel)
        return None
    errors = validate_event(envelope)
    if errors or envelope.get("type") not in EPHEMERAL_TYPES:
        logger.warning("dropped a malformed ephemeral event on %s", channel)
        return None
    return Event.ephemeral(channel, envelope, data)


def decode(channel: str, event_id: str, data: str | bytes) -> Event | None:
    """An event read back from Redis (a pub/sub message or a history entry), or None if it is
    not one the publish script wrote: its id and envelope are checked before anyone sees it."""
    if not ids.is_event_id(event_id):
        logger.warning("dropped a message without an event id on %s", channel)
        return None
    if ids.parse(event_id)[0] > time.time() * 1000 + MAX_ID_LEAD_MS:
        logger.warning("dropped a message with an id from the future on %s", channel)
        return None
    try:
        text = as_text(data)
        envelope = orjson.loads(text)
    except ValueError:  # orjson's JSONDecodeError (depth too) and UnicodeDecodeError are ValueErrors
        logger.warning("dropped a message that is not JSON on %s", channel)
        return None
    errors = validate_event(envelope)
    if errors:
        logger.warning("dropped a malformed event on %s: %s", channel, errors)
        return None
    return Event.build(event_id, channel, envelope, text)
