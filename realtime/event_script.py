"""Publishing from inside a Lua script: the one piece of Lua that gives events their ids, adds
them to their channels' histories within the bounds and publishes them.

The broker's own publish runs it for one event (realtime.event_log); a session store runs it
inside the script that commits a change, so that the change and every event it causes are one
atomic step (app/domain/store/redis_store.py). Either way the keys, ids and bounds are this
module's business, and the caller only places the section's keys and arguments after its own.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from realtime.channels import PATTERN_HISTORY_FACTOR, is_queue
from realtime.layout import Layout

# ``publish_events(k, a)`` publishes the events described from KEYS[k+1] and ARGV[a+1] on: ARGV
# a+1 how many, a+2 .. a+9 the history bounds (events, bytes), their lifetime (ms), the publish
# command (PUBLISH, or SPUBLISH on a cluster), the pattern history's bounds (events, bytes) and
# a delivery queue's (events, lifetime in ms); then per event its wire channel, its data and how
# many keys it has: 3 (history, its size, the clock), 5 (and the history of the pattern its
# channel matches, with its size) or 1 (a delivery queue: a stream its readers take entries
# from, with ids of its own, published to nobody: realtime.channels.is_queue). Then the
# outbox (a cluster's: events for other slots, which the script cannot reach): how many, and if
# any, its key (the next KEYS), its lifetime (ms) and per event its channel and data, added to
# the outbox stream. Returns the ids, in order, then (if the outbox took any) every entry the
# outbox holds, older ones first, as id, channel, data.
#
EVENTS_LUA = """
local function append(key, size_key, id, data, max_len, max_bytes, cutoff_ms, ttl)
  local added = redis.pcall('XADD', key, id, 'd', data)
  if type(added) == 'table' and added.err then
    added = redis.call('XADD', key, '*', 'd', data)
  end
  local size = redis.call('INCRBY', size_key, #data)
  local len = redis.call('XLEN', key)
  while len > 1 do
    local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
    local oldest_ms = tonumber(string.match(oldest[1], '^(%d+)-'))
    if len <= max_len and size <= max_bytes and oldest_ms >= cutoff_ms then
      break
    end
    redis.call('XDEL', key, oldest[1])
    size = size - #oldest[2][2]
    len = len - 1
  end
  redis.call('SET', size_key, size, 'PX', ttl)
  redis.call('PEXPIRE', key, ttl)
  return added
end

local function next_id(clock, now_ms)
  local ms, seq = now_ms, 0
  local last = redis.call('GET', clock)
  if last then
    local last_ms, last_seq = string.match(last, '^(%d+)-(%d+)$')
    last_ms = tonumber(last_ms)
    if ms <= last_ms then
      ms = last_ms
      seq = tonumber(last_seq) + 1
    end
  end
  return string.format('%.0f-%.0f', ms, seq)
end

local function to_outbox(k, a)
  local count = tonumber(ARGV[a + 1])
  if count == 0 then
    return {}
  end
  local key, ttl = KEYS[k + 1], ARGV[a + 2]
  a = a + 2
  for i = 1, count do
    redis.call('XADD', key, '*', 'c', ARGV[a + 1], 'd', ARGV[a + 2])
    a = a + 2
  end
  redis.call('PEXPIRE', key, ttl)
  local held = {}
  for _, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do
    local fields = entry[2]
    held[#held + 1] = entry[1]
    held[#held + 1] = fields[2]
    held[#held + 1] = fields[4]
  end
  return held
end

local function publish_events(k, a)
  local count = tonumber(ARGV[a + 1])
  local ids = {}
  if count > 0 then
    local max_len, max_bytes = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local ttl, command = tonumber(ARGV[a + 4]), ARGV[a + 5]
    local pattern_len, pattern_bytes = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
    local queue_len, queue_ttl = ARGV[a + 8], ARGV[a + 9]
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    local cutoff_ms = now_ms - ttl
    for i = 1, count do
      local at = a + 9 + 3 * (i - 1)
      local wire, data, keys = ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
      if keys == 1 then
        ids[i] = redis.call('XADD', KEYS[k + 1], 'MAXLEN', '~', queue_len, '*', 'd', data)
        redis.call('PEXPIRE', KEYS[k + 1], queue_ttl)
      else
        local clock = KEYS[k + 3]
        local id = append(KEYS[k + 1], KEYS[k + 2], next_id(clock, now_ms), data, max_len, max_bytes, cutoff_ms, ttl)
        redis.call('SET', clock, id, 'PX', ttl)
        if keys == 5 then
          append(KEYS[k + 4], KEYS[k + 5], id, data, pattern_len, pattern_bytes, cutoff_ms, ttl)
        end
        redis.call(command, wire, id .. ' ' .. data)
        ids[i] = id
      end
      k = k + keys
    end
  end
  for _, held in ipairs(to_outbox(k, a + 9 + 3 * count)) do
    ids[#ids + 1] = held
  end
  return ids
end
"""


# A delivery queue keeps about this many entries (XADD MAXLEN ~), each at most this long after
# the newest was added: what waits for a reader that does not come is bounded too.
QUEUE_MAXLEN = 100_000
QUEUE_TTL_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class EventSection:
    """The keys and arguments of ``publish_events`` for some events, to place after a script's
    own (``publish_events(#own keys, #own arguments)``)."""

    keys: list[str]
    args: list[Any]


# The section of a script that publishes nothing.
NO_EVENTS = EventSection([], [0, 0, 0, 0, "PUBLISH", 0, 0, 0, 0, 0])

# Published from a session's outbox (a cluster's; realtime.session_outbox): KEYS[1] the mark of
# the newest outbox entry of that session published on the event's slot, ARGV[1] this entry's
# id, ARGV[2] the mark's lifetime (ms); then one event's section. Publishes only an entry newer
# than the mark, so that one published twice (by the process that committed it and by a relay
# after it died) goes out once; returns its id, or false if it was out already.
RELAYED_PUBLISH_SCRIPT = (
    EVENTS_LUA
    + """
local function older(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  return a_ms < b_ms or (a_ms == b_ms and tonumber(a_seq) <= tonumber(b_seq))
end
local mark = redis.call('GET', KEYS[1])
if mark and older(ARGV[1], mark) then
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return publish_events(1, 2)[1]
"""
)


def size_key(history_key: str) -> str:
    """The key of a history's size in bytes: beside it (same hash tag; no channel name
    holds a "#")."""
    return history_key + "#bytes"


@dataclass(frozen=True, slots=True)
class EventKeys:
    """Where the events of a layout go, and the bounds of their histories."""

    layout: Layout
    history_maxlen: int
    history_bytes: int
    ttl_ms: int
    queue_maxlen: int = QUEUE_MAXLEN
    queue_ttl_ms: int = QUEUE_TTL_MS

    def section(
        self, events: Sequence[tuple[str, str]], outbox: "tuple[str, Sequence[tuple[str, str]]] | None" = None
    ) -> EventSection:
        """``publish_events``'s part for ``events`` as (channel, data), in order, and the
        ``outbox`` (its key, and its events as (channel, data)) if any."""
        layout = self.layout
        keys: list[str] = []
        args: list[Any] = [
            len(events),
            self.history_maxlen,
            self.history_bytes,
            self.ttl_ms,
            layout.publish_command,
            self.history_maxlen * PATTERN_HISTORY_FACTOR,
            self.history_bytes * PATTERN_HISTORY_FACTOR,
            self.queue_maxlen,
            self.queue_ttl_ms,
        ]
        for channel, data in events:
            history = layout.history_key(channel)
            if is_queue(channel):
                keys.append(history)
                args += ["", data, 1]
                continue
            keys += [history, size_key(history), layout.clock_key((channel,))]
            pattern_history = layout.pattern_history_key(channel)
            if pattern_history is not None:
                keys += [pattern_history, size_key(pattern_history)]
            args += [layout.wire(channel), data, 3 if pattern_history is None else 5]
        if not outbox or not outbox[1]:
            return EventSection(keys, [*args, 0])
        outbox_key, held = outbox
        keys.append(outbox_key)
        args += [len(held), self.ttl_ms]
        for channel, data in held:
            args += [channel, data]
        return EventSection(keys, args)
