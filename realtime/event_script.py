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

from realtime.channels import PATTERN_HISTORY_FACTOR
from realtime.layout import Layout

# ``publish_events(k, a)`` publishes the events described from KEYS[k+1] and ARGV[a+1] on: ARGV
# a+1 how many, a+2 .. a+7 the history bounds (events, bytes), their lifetime (ms), the publish
# command (PUBLISH, or SPUBLISH on a cluster) and the pattern history's bounds (events, bytes);
# then per event its wire channel, its data and how many keys it has: 3 (history, its size, the
# clock) or 5 (and the history of the pattern its channel matches, with its size). Returns the
# ids, in order.
#
# An id is max(now, last + 1) of the clock, so ids are unique and increasing on a clock (one
# for all channels on one Redis: a stream of several channels sees them in order). Should a
# history hold a larger id than its clock (the clock key was lost), XADD picks the id itself
# and the clock catches up, rather than the event being refused. A history keeps its newest
# events within its count, its bytes and its lifetime (ids are milliseconds: the oldest
# entries go first, as a trim would); the clock and the sizes expire with the histories.
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

local function publish_events(k, a)
  local count = tonumber(ARGV[a + 1])
  if count == 0 then
    return {}
  end
  local max_len, max_bytes = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local ttl, command = tonumber(ARGV[a + 4]), ARGV[a + 5]
  local pattern_len, pattern_bytes = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local cutoff_ms = now_ms - ttl
  local ids = {}
  a = a + 7
  for i = 1, count do
    local wire, data, keys = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
    local clock = KEYS[k + 3]
    local id = append(KEYS[k + 1], KEYS[k + 2], next_id(clock, now_ms), data, max_len, max_bytes, cutoff_ms, ttl)
    redis.call('SET', clock, id, 'PX', ttl)
    if keys == 5 then
      append(KEYS[k + 4], KEYS[k + 5], id, data, pattern_len, pattern_bytes, cutoff_ms, ttl)
    end
    redis.call(command, wire, id .. ' ' .. data)
    ids[i] = id
    a = a + 3
    k = k + keys
  end
  return ids
end
"""


@dataclass(frozen=True, slots=True)
class EventSection:
    """The keys and arguments of ``publish_events`` for some events, to place after a script's
    own (``publish_events(#own keys, #own arguments)``)."""

    keys: list[str]
    args: list[Any]


# The section of a script that publishes nothing.
NO_EVENTS = EventSection([], [0, 0, 0, 0, "PUBLISH", 0, 0])


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

    def section(self, events: Sequence[tuple[str, str]]) -> EventSection:
        """``publish_events``'s part for ``events`` as (channel, data), in order."""
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
        ]
        for channel, data in events:
            history = layout.history_key(channel)
            keys += [history, size_key(history), layout.clock_key((channel,))]
            pattern_history = layout.pattern_history_key(channel)
            if pattern_history is not None:
                keys += [pattern_history, size_key(pattern_history)]
            args += [layout.wire(channel), data, 3 if pattern_history is None else 5]
        return EventSection(keys, args)
