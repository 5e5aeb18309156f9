"""The names the product gives Redis on one Redis: every key and channel it may create (in the
default namespace; ``--namespace NAME`` prefixes each with ``NAME:``), and what a Redis holds
right now, so that a test can list any name that is not one of them."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

NAME = r"[A-Za-z0-9_-]{1,64}"
# Every key and channel the product may create; anything else came from an unchecked name.
SAFE_KEY = re.compile(
    rf"(?:(?:session|messages|messages_size|bot_leases):\{{{NAME}\}}"
    rf"|agents:\{{sse:workbench\}}|agents_seen:\{{sse:workbench\}}|agent_load:\{{sse:workbench\}}{NAME}"
    rf"|agents_assigned:\{{sse:workbench\}}|customers_seen:\{{sse:workbench\}}"
    rf"|typing:{NAME}:(?:customer|agent:{NAME})"
    rf"|history:queue:webhooks(?:#tries|#dead:webhook-[0-9a-f]{{16}})?|queue:served"
    rf"|(?:(?:history:sse:session|history:sse:agent):{NAME}|history:sse:session:\.agents"
    rf"|history:sse:broadcast|history:sse:canary:{NAME}|history:sse:session:\*)(?:#bytes)?"
    rf"|status:(?:bot_active|waiting_agent|agent_active|closed)"
    rf"|events:clock|sessions:status_seq)\Z"
)
SAFE_CHANNEL = re.compile(
    rf"(?:sse:(?:session|agent|canary|presence):{NAME}|sse:broadcast|sse:session:\.agents)\Z"
)


@dataclass(frozen=True)
class RedisNames:
    keys: list[str]
    channels: list[str]  # subscribed (PUBSUB CHANNELS)
    patterns: int  # pattern subscriptions (PUBSUB NUMPAT: Redis does not list them)


async def redis_names(url: str) -> RedisNames:
    """Every key, every subscribed channel, and the number of pattern subscriptions."""
    redis = Redis.from_url(url, decode_responses=True)
    try:
        # A decoding client: the names come as str.
        keys = sorted(cast(list[str], await redis.keys("*")))
        channels = sorted(cast(list[str], await redis.pubsub_channels("*")))
        return RedisNames(keys, channels, int(await redis.pubsub_numpat()))
    finally:
        await redis.aclose()


def outside(names: Iterable[str], safe: re.Pattern[str], namespace: str = "") -> list[str]:
    """The names that are not ``safe`` names of ``namespace`` (each ``NAME:`` + a safe name,
    or a bare safe name for the default namespace)."""
    prefix = f"{namespace}:" if namespace else ""
    return [n for n in names if not (n.startswith(prefix) and safe.match(n.removeprefix(prefix)))]
