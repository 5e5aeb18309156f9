"""Helpers for tests that drive a broker directly (the broker contract, and the same checks
on a Redis Cluster): a valid event, and bounded reads of a subscription."""

import asyncio
from typing import Any

from realtime.broker import Subscription
from realtime.events import Event, envelope

QUIET = 0.3  # how long "nothing arrives" is watched for
SETTLE = 2.0  # upper bound for anything that should happen "soon"


def event(n: int = 0, session: str = "s1") -> dict[str, Any]:
    """A valid envelope; ``n`` goes into the agent id so events can be told apart."""
    payload = {"session_name": session, "agent_id": f"a{n}"}
    return envelope("agent_joined", payload, "agent_workbench")


async def take(subscription: Subscription, count: int, timeout: float = SETTLE) -> list[Event]:
    """Exactly ``count`` events from ``subscription``, failing if they do not come in time."""
    received: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(received) < count:
            item = await subscription.get()
            assert item is not None
            received.append(item)
    return received


async def assert_quiet(subscription: Subscription, timeout: float = QUIET) -> None:
    item = await subscription.get(timeout=timeout)
    assert item is None, f"unexpected event {item!r}"
