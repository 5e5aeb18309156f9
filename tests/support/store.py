"""What store tests share (the store contract, and the same races on a Redis Cluster): the
agents, how many race, the one-winner check, and the status sets as Redis holds them."""

from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.domain.store import Transition, TransitionRefused
from tests.support.api import STATUSES

HOLDER = "alice"  # the agent that holds the session when it starts in agent_active
OTHER = "bob"  # an agent that does not hold it
CONCURRENCY = 20


def assert_one_winner(results: Sequence[object], agents: list[str]) -> str:
    """Exactly one takeover changed the session; every other one raised TransitionRefused."""
    winners = [
        agent for agent, r in zip(agents, results, strict=True) if isinstance(r, Transition) and r.changed
    ]
    refused = [r for r in results if isinstance(r, TransitionRefused)]
    others = [r for r in results if not isinstance(r, (Transition, TransitionRefused))]
    assert others == []
    assert len(winners) == 1, results
    assert len(refused) == len(agents) - 1
    return winners[0]


async def status_sets_holding(redis: Redis | RedisCluster, name: str) -> list[str]:
    """The statuses whose ``status:{status}`` index holds ``name``."""
    return [s for s in STATUSES if await redis.zscore(f"status:{s}", name) is not None]


async def index_of(redis: Redis | RedisCluster, status: str) -> set[str]:
    """The names in a status index."""
    members = cast(list[bytes | str], await redis.zrange(f"status:{status}", 0, -1))  # no scores asked
    return {m.decode() if isinstance(m, bytes) else m for m in members}
