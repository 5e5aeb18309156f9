"""The Redis session store's Lua scripts (app/domain/store/redis_store.py runs them): what one
action writes atomically, and the store's housekeeping."""

from realtime.command_pipe import PipeScript
from realtime.event_script import EVENTS_LUA

# ``next_seq(clock, ttl)``: the next queue number, Redis's time in microseconds or one past the
# clock's last number if that is later (so it strictly increases whatever the clocks do), kept
# in ``clock`` for ``ttl`` ms. Returned as text: Lua numbers are doubles, exact up to 2^53.
NEXT_SEQ_LUA = """
local function next_seq(clock, ttl)
  local time = redis.call('TIME')
  local number = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local last = tonumber(redis.call('GET', clock) or '0')
  if last >= number then
    number = last + 1
  end
  local text = string.format('%.0f', number)
  redis.call('SET', clock, text, 'PX', ttl)
  return text
end
"""

# KEYS: session, messages, transcript size, the status_seq clock, the index of the status the
# session enters, the index of the status it leaves; then the events' (realtime.event_script).
# ARGV: 1 the session as read ("" = absent), 2 the session to write ("" = unchanged), 3 a
# message to append ("" = none), 4-5 the transcript's limits (messages, bytes), 6 the keys'
# lifetime in ms, 7 "1" or "2" if the session enters a status and the indexes are updated here
# (one Redis; the session's ``"status_seq":-1`` or ``-2`` then gets the clock's next number, or
# with "2" one less than the first of the index it enters, if any: the front of its queue), 8 the indexes'
# and the clock's lifetime in ms, 9 the session's name; then the events' arguments. Returns
# {1, the new status_seq or "", the events' ids...} if written, else {0, the session as it is
# ("" = absent)}. Every write renews the expiry of the session's keys: an active conversation
# lives on, an abandoned one goes.
ACTION_SCRIPT = (
    EVENTS_LUA
    + NEXT_SEQ_LUA
    + """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return {0, current}
end
local session, seq = ARGV[2], ''
if ARGV[7] ~= '' then
  local head = ARGV[7] == '2' and redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES') or {}
  if head[2] then
    seq = string.format('%.0f', tonumber(head[2]) - 1)
  else
    seq = next_seq(KEYS[4], ARGV[8])
  end
  session = string.gsub(session, '"status_seq":%-[12]([,}])', '"status_seq":' .. seq .. '%1', 1)
  redis.call('ZADD', KEYS[5], seq, ARGV[9])
  redis.call('PEXPIRE', KEYS[5], ARGV[8])
  if KEYS[6] ~= KEYS[5] then
    redis.call('ZREM', KEYS[6], ARGV[9])
  end
end
if session ~= '' then
  redis.call('SET', KEYS[1], session, 'PX', ARGV[6])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
if ARGV[3] ~= '' then
  local count = redis.call('RPUSH', KEYS[2], ARGV[3])
  local size = redis.call('INCRBY', KEYS[3], #ARGV[3])
  local max_count, max_size = tonumber(ARGV[4]), tonumber(ARGV[5])
  while count > 1 and (count > max_count or size > max_size) do
    size = redis.call('DECRBY', KEYS[3], #redis.call('LPOP', KEYS[2]))
    count = count - 1
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return {1, seq, unpack(publish_events(6, 9))}
"""
)

ACTION = PipeScript.of(ACTION_SCRIPT)

# KEYS: session, messages, transcript size. ARGV: the session, its lifetime in ms, then its
# messages. Writes only a session Redis does not have (with its transcript); 1 if written.
ADOPT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
for i = 3, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  redis.call('INCRBY', KEYS[3], #ARGV[i])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""

# KEYS: the status_seq clock. ARGV: its lifetime in ms. The next queue number (a cluster's:
# the action script takes its own on one Redis).
NEXT_SEQ_SCRIPT = NEXT_SEQ_LUA + "return next_seq(KEYS[1], ARGV[1])\n"

# KEYS: session, messages, transcript size, the closed index (one Redis; on a cluster the
# session's key again: the store updates the index after). ARGV: the status_seq the session
# closed with, its name. Deletes the session (and its index entry) if it is still that closed
# session (not one re-created since); 1 if so. The entry goes too if the session is gone or
# not closed.
DELETE_CLOSED_SCRIPT = """
local function unindex()
  if KEYS[4] ~= KEYS[1] then
    redis.call('ZREM', KEYS[4], ARGV[2])
  end
end
local raw = redis.call('GET', KEYS[1])
if not raw then
  unindex()
  return 0
end
local session = cjson.decode(raw)
if session['status'] ~= 'closed' then
  unindex()
  return 0
end
if string.format('%.0f', session['status_seq']) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
unindex()
return 1
"""
