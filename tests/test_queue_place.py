"""The customer's place in the queue (docs/routing.md): ``GET /chatbot/api/sessions/{name}/
queue``, ``queue_update`` on the customer's stream when it changes, and the wait estimate,
checked against a scripted arrival and service pattern. Memory, and a real redis-server."""

import math

import pytest

from app.domain.queue_stats import MIN_SERVED, WINDOW, MemoryServiceRate, estimate
from app.process.settings import Settings
from tests.support.api import CHATBOT, WORKBENCH, act, call_json, create, escalate, session_events
from tests.support.app_server import AppClient, MakeClient
from tests.support.sse import open_stream

SERVICE_EVERY = 30.0  # seconds between two takeovers in the scripted day


async def place(client: AppClient, name: str) -> dict[str, object]:
    return await call_json(client, "GET", f"{CHATBOT}/sessions/{name}/queue")


@pytest.fixture
async def roomy(make_client: MakeClient, settings: Settings) -> AppClient:
    return await make_client(settings, start_rate=1000, agent_capacity=100)


async def test_positions_follow_the_queue(roomy: AppClient) -> None:
    client = roomy
    for name in ("q1", "q2", "q3"):
        await create(client, name)
    assert await place(client, "q1") == {
        "session_name": "q1",
        "status": "bot_active",
        "position": None,
        "estimated_wait_seconds": None,
    }
    for name in ("q1", "q2", "q3"):
        await escalate(client, name)
    assert [(await place(client, n))["position"] for n in ("q1", "q2", "q3")] == [1, 2, 3]
    assert (await place(client, "q3"))["estimated_wait_seconds"] is None  # no pace yet
    await act(client, "q1", "takeover", "alice")
    assert [(await place(client, n))["position"] for n in ("q2", "q3")] == [1, 2]
    async with client.get(f"{CHATBOT}/sessions/nobody/queue") as answer:
        assert answer.status == 404


async def test_the_estimate_comes_from_the_pace_and_the_agents_online(roomy: AppClient) -> None:
    client = roomy
    names = [f"p{n}" for n in range(MIN_SERVED + 2)]
    for name in names:
        await create(client, name)
        await escalate(client, name)
    for name in names[:MIN_SERVED]:
        await act(client, name, "takeover", "alice")  # the pace: three takeovers just now
    assert (await place(client, names[-1]))["estimated_wait_seconds"] is None  # nobody online
    await call_json(client, "POST", f"{WORKBENCH}/agents/alice/status", {"status": "online"})
    last = await place(client, names[-1])
    assert last["position"] == 2
    assert last["estimated_wait_seconds"] == math.ceil(1.5 * WINDOW / MIN_SERVED)


async def test_the_customer_hears_its_place_change(roomy: AppClient) -> None:
    client = roomy
    for name in ("h1", "h2"):
        await create(client, name)
        await escalate(client, name)
    async with open_stream(client, session_events("h2")) as (customer, _):
        first = await customer.next_of("queue_update", timeout=5)
        assert first.id is None and first.payload["position"] == 2
        await act(client, "h1", "takeover", "alice")
        moved = await customer.next_of("queue_update", timeout=5)
        assert moved.payload == {"session_name": "h2", "position": 1, "estimated_wait_seconds": None}
        with pytest.raises(TimeoutError):  # unchanged: nothing more
            await customer.next_of("queue_update", timeout=1.5)


async def test_the_estimate_against_a_scripted_day() -> None:
    """Customers arrive; agents take one every SERVICE_EVERY seconds, first come first served.
    Once the pace has a full window behind it, each customer's estimate at arrival is its
    actual wait within 60 % of a service interval (where between two takeovers it arrived, and
    whether the window's edges hold one takeover more) plus 5 %."""
    pace = MemoryServiceRate()
    queue: list[tuple[str, float, int | None]] = []  # (name, arrived, estimate at arrival)
    waits: dict[str, tuple[float, int | None]] = {}
    now, next_service = 0.0, SERVICE_EVERY
    for n in range(200):
        arrival = n * SERVICE_EVERY * 0.98  # a little faster than the service: the queue grows
        while next_service <= arrival:
            if queue:
                name, arrived, guess = queue.pop(0)
                await pace.note(next_service)
                waits[name] = (next_service - arrived, guess)
            next_service += SERVICE_EVERY
        now = arrival
        position = len(queue) + 1
        served = await pace.served(now)
        queue.append((f"c{n}", now, estimate(position, served, WINDOW, agents_online=1)))
    steady = [(wait, guess) for wait, guess in waits.values() if guess is not None]
    assert len(steady) > 100
    late = [
        (wait, guess) for wait, guess in steady[40:] if abs(guess - wait) > 0.6 * SERVICE_EVERY + 0.05 * wait
    ]
    assert not late, late[:5]
