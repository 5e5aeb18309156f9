"""The benchmark's baseline broker behaves like the product's broker for a subscriber, and is
what it claims to be: one Redis pub/sub connection per subscription (the original design)."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bench.baseline_broker import PerStreamRedisBroker
from realtime.events import envelope

STREAMS = 25


@pytest.fixture
async def baseline(redis_url: str) -> AsyncIterator[PerStreamRedisBroker]:
    client = Redis.from_url(redis_url)
    broker = PerStreamRedisBroker(client, subscriber_url=redis_url)
    assert await broker.start(wait=5)
    yield broker
    await broker.close()
    await client.aclose()


def joined(n: int) -> dict[str, object]:
    return envelope("agent_joined", {"session_name": "s1", "agent_id": f"a{n}"}, "agent_workbench")


async def pubsub_clients(redis: Redis) -> int:
    clients = await redis.client_list()
    return sum(1 for c in clients if int(c.get("sub", 0)) > 0)


async def test_every_subscription_gets_every_event_in_order(
    baseline: PerStreamRedisBroker, redis: Redis
) -> None:
    """Fan-out over per-stream connections: each subscription receives all events, in order,
    and each holds a pub/sub connection of its own while it is open."""
    channel = "sse:session:baseline"
    async with asyncio.timeout(10):
        subscriptions = [baseline.subscribe(channel) for _ in range(STREAMS)]
        for subscription in subscriptions:
            await subscription.__aenter__()
        try:
            assert await pubsub_clients(redis) == STREAMS
            published = [await baseline.publish(channel, joined(n)) for n in range(20)]
            for subscription in subscriptions:
                received = [await subscription.get() for _ in published]
                assert [e.id for e in received if e is not None] == published
        finally:
            for subscription in subscriptions:
                await subscription.__aexit__(None, None, None)
        for _ in range(50):
            if await pubsub_clients(redis) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pubsub_clients(redis) == 0
