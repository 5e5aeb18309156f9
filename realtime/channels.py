"""Channel names. Callers validate names first; these builders refuse anything unsafe anyway."""

from schemas.fields import is_valid_name

SESSION_PREFIX = "sse:session:"
AGENT_PREFIX = "sse:agent:"
CANARY_PREFIX = "sse:canary:"
# Subscribed by every customer-side stream of a session, published to by nobody: its
# subscriber count, across processes, says whether the customer is connected.
PRESENCE_PREFIX = "sse:presence:"
BROADCAST = "sse:broadcast"


def _checked(name: str) -> str:
    if not is_valid_name(name):
        raise ValueError(f"unsafe name for a channel: {name!r}")
    return name


def session_channel(session_name: str) -> str:
    return SESSION_PREFIX + _checked(session_name)


def agent_channel(agent_id: str) -> str:
    return AGENT_PREFIX + _checked(agent_id)


# Every session's events: a pattern subscription (PSUBSCRIBE) on one Redis. A Redis Cluster's
# sharded pub/sub has no patterns: there every session event is also published to the feed.
SESSION_PATTERN = SESSION_PREFIX + "*"
SESSIONS_FEED = "sse:sessions"
# Agents' presence for supervisors: a channel under the session prefix, so that the supervisor
# stream's pattern (and a cluster's sessions feed) carries it, named as no session can be (a
# name has no "."): agent_status goes here as well as to the broadcast.
SUPERVISOR_AGENTS = SESSION_PREFIX + ".agents"
# The history of every session together keeps this many times a channel's history size.
PATTERN_HISTORY_FACTOR = 10


# A delivery queue: events that readers take one by one and acknowledge (outbound webhooks),
# written with the change that causes them, like a channel's events, but published to nobody
# and resumed by nobody (realtime.event_script, realtime.delivery_queue).
QUEUE_PREFIX = "queue:"


def is_queue(channel: str) -> bool:
    return channel.startswith(QUEUE_PREFIX)


def is_pattern(name: str) -> bool:
    """Channel names are validated names: only a pattern holds a "*"."""
    return "*" in name


def presence_channel(session_name: str) -> str:
    return PRESENCE_PREFIX + _checked(session_name)


def canary_channel(process_token: str) -> str:
    return CANARY_PREFIX + _checked(process_token)


# On a Redis Cluster, a stream's channels must share a slot (one clock orders a stream's
# events). The agent channels and the broadcast, which agent streams combine, share one tag. A
# session channel's tag is the session name, the hash tag of the session's store keys too
# (app/domain/store/redis_store.py), so that a session's state and its events live on one shard: a
# shard that is away then refuses the change before anything is written. Other channels are
# their own tag. (Names cannot contain ":", so no session name is the workbench tag.)
WORKBENCH_TAG = "sse:workbench"


def slot_tag(channel: str) -> str:
    for prefix in (SESSION_PREFIX, PRESENCE_PREFIX):
        if channel.startswith(prefix):
            return channel[len(prefix) :]
    if channel == BROADCAST or channel.startswith(AGENT_PREFIX):
        return WORKBENCH_TAG
    return channel
