"""``python -m bench.routing_costs``: what the router's rounds cost on Redis (docs/routing.md,
"What routing costs").

A redis-server of its own on a free loopback port and the app's real backends (the store with
its command pipe, the agent registry, customer presence), driven directly (no HTTP); every
scenario in a namespace of its own on that Redis:

- idle: one ``round()`` (median and p99) with 0 to 5,000 conversations waiting, manual
  assignment, the wait timeout and customer idle on but not due (every customer seen just now):
  what every workbench process spends each second;
- offers: auto assignment, ``--waiting`` conversations and 100 agents online with capacity 10:
  the rounds (and time) to offer them all, and a round making N offers against the next round
  (none left to make) on the same queue: µs per offer (the registry's reserve + the move);
- race: two routers on two backends opened on the same Redis (two processes), rounds at once
  (asyncio.gather) until no more offers are made; offers made by each, offers refused because
  the other got there first, and a read-back: no agent offered past its capacity, no
  conversation counted by two routers, every offer counted against its agent's load.
"""

import argparse
import asyncio
import cProfile
import functools
import io
import logging
import pstats
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import CollectorRegistry

from app.backends import Backends, open_backends
from app.domain import announcements
from app.domain.agents import AgentRegistry, AtCapacity
from app.domain.routing.metrics import RoutingMetrics
from app.domain.routing.router import HEAD_PAGES, Router, RoutingPolicy
from app.domain.store.base import MAX_PAGE, Session
from app.process.settings import Settings
from tests.support.redis_server import temporary_redis

logger = logging.getLogger(__name__)

IDLE_QUEUES = (0, 100, 1_000, 5_000)
AGENTS, CAPACITY = 100, 10
# Offers per round measured (agents x capacity): each on a fresh queue of --waiting.
OFFER_ROOMS = ((10, 1), (100, 1), (100, 10))
MAX_ROUNDS = 20  # a scenario's rounds are bounded
SEED_BATCH = 100
ESCALATE = functools.partial(announcements.of_transition, action="escalate", source="ai_chatbot")


@dataclass(slots=True)
class CountingAgents:
    """The registry, counting the reserves a router makes (its offer attempts) and those
    refused at capacity; everything else passes through."""

    inner: AgentRegistry
    reserved: int = 0
    at_capacity: int = 0

    async def reserve(self, agent_id: str, session_name: str) -> bool:
        try:
            counted = await self.inner.reserve(agent_id, session_name)
        except AtCapacity:
            self.at_capacity += 1
            raise
        self.reserved += 1
        return counted

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass(slots=True)
class Routing:
    """One process's router on its own backends."""

    backends: Backends
    router: Router
    registry: CollectorRegistry
    agents: CountingAgents

    @property
    def made(self) -> int:
        value = self.registry.get_sample_value("switchboard_offers_total", {"result": "made"})
        return int(value or 0)


@dataclass(slots=True)
class Race:
    rounds: int = 0
    seconds: float = 0.0
    made: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    at_capacity: list[int] = field(default_factory=list)
    offered: int = 0  # conversations with an offer, read back
    over_capacity: list[str] = field(default_factory=list)
    uncounted: int = 0  # offers not in their agent's load
    double_counted: int = 0  # conversations in two agents' loads

    @property
    def refused(self) -> int:
        return sum(self.attempts) - sum(self.made)

    @property
    def passed(self) -> bool:
        return not self.over_capacity and not self.double_counted and sum(self.made) == self.offered


async def opened(url: str, namespace: str, policy: RoutingPolicy) -> Routing:
    settings = Settings(redis_url=url, insecure=True, namespace=namespace, customer_idle=policy.customer_idle)
    backends = await open_backends(settings)
    registry = CollectorRegistry()
    agents = CountingAgents(backends.agents)
    router = Router(
        backends.store, cast(AgentRegistry, agents), backends.customers, policy, RoutingMetrics(registry)
    )
    return Routing(backends, router, registry, agents)


async def seed(backends: Backends, waiting: int, agents: int, capacity: int) -> None:
    """``waiting`` conversations escalated (their customers seen now) and ``agents`` online."""
    store, names = backends.store, [f"q-{n:05d}" for n in range(waiting)]

    async def escalated(name: str) -> None:
        await store.create(name)
        await store.apply(name, "escalate", announce=ESCALATE)

    for start in range(0, waiting, SEED_BATCH):
        await asyncio.gather(*(escalated(name) for name in names[start : start + SEED_BATCH]))
    await backends.customers.seen(names, time.time())
    for n in range(agents):
        await backends.agents.set_status(f"agent-{n:03d}", "online", capacity)


async def timed_round(router: Router) -> float:
    started = time.perf_counter()
    await router.round(time.time())
    return time.perf_counter() - started


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) > 1 else samples[0]


def profiled(label: str, profile: cProfile.Profile) -> None:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(18)
    logger.info("profile of %s:\n%s", label, out.getvalue())


async def idle(url: str, waiting: int, rounds: int, profile: bool) -> tuple[float, float]:
    policy = RoutingPolicy(auto=False, wait_timeout=300.0, customer_idle=600.0)
    routing = await opened(url, f"idle{waiting}", policy)
    try:
        await seed(routing.backends, waiting, 0, 0)
        await routing.router.round(time.time())  # warm: scripts loaded, connections open
        spent = [await timed_round(routing.router) for _ in range(rounds)]
        assert routing.registry.get_sample_value("switchboard_queue_length") == min(
            waiting, HEAD_PAGES * MAX_PAGE
        )
        if profile and waiting == 1_000:
            with cProfile.Profile() as prof:
                await routing.router.round(time.time())
            profiled(f"an idle round, {waiting} waiting", prof)
        return statistics.median(spent), p99(spent)
    finally:
        await routing.backends.close()


async def offering(url: str, waiting: int, tag: str, agents: int, capacity: int) -> Routing:
    policy = RoutingPolicy(auto=True, offer_timeout=30.0, wait_timeout=300.0, customer_idle=600.0)
    routing = await opened(url, tag, policy)
    await seed(routing.backends, waiting, agents, capacity)
    return routing


async def throughput(url: str, waiting: int) -> tuple[int, float, int]:
    """Rounds, seconds and offers to offer ``waiting`` conversations to 100 agents of 10."""
    routing = await offering(url, waiting, "through", AGENTS, CAPACITY)
    try:
        rounds, started = 0, time.perf_counter()
        while routing.made < min(waiting, AGENTS * CAPACITY) and rounds < MAX_ROUNDS:
            await routing.router.round(time.time())
            rounds += 1
        return rounds, time.perf_counter() - started, routing.made
    finally:
        await routing.backends.close()


async def per_offer(
    url: str, waiting: int, agents: int, capacity: int, rep: int, profile: bool
) -> tuple[float, float, int]:
    """A round making agents x capacity offers, and the next (no room left), in seconds."""
    routing = await offering(url, waiting, f"offer{agents}x{capacity}r{rep}", agents, capacity)
    try:
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        offering_round = await timed_round(routing.router)
        if prof is not None:
            prof.disable()
            profiled(f"a round making {routing.made} offers, {waiting} waiting", prof)
        made = routing.made
        next_round = statistics.median([await timed_round(routing.router) for _ in range(5)])
        assert routing.made == made, "the next round made offers"
        return offering_round, next_round, made
    finally:
        await routing.backends.close()


async def waiting_sessions(backends: Backends) -> list[Session]:
    found: list[Session] = []
    cursor = None
    for _ in range(MAX_ROUNDS):
        page = await backends.store.list_sessions("waiting_agent", limit=MAX_PAGE, after=cursor)
        found.extend(page.items)
        if (cursor := page.next_cursor) is None:
            break
    return found


async def race(url: str, waiting: int) -> Race:
    policy = RoutingPolicy(auto=True, offer_timeout=30.0, wait_timeout=300.0, customer_idle=600.0)
    one = await opened(url, "race", policy)
    other = await opened(url, "race", policy)
    result = Race()
    try:
        await seed(one.backends, waiting, AGENTS, CAPACITY)
        started = time.perf_counter()
        while result.rounds < MAX_ROUNDS:
            before = one.made + other.made
            now = time.time()
            await asyncio.gather(one.router.round(now), other.router.round(now))
            result.rounds += 1
            if one.made + other.made == before:
                break
        result.seconds = time.perf_counter() - started
        for routing in (one, other):
            result.made.append(routing.made)
            result.attempts.append(routing.agents.reserved)
            result.at_capacity.append(routing.agents.at_capacity)
        offers = {
            s["session_name"]: o["agent_id"]
            for s in await waiting_sessions(one.backends)
            if (o := s.get("offer"))
        }
        result.offered = len(offers)
        per_agent = Counter(offers.values())
        result.over_capacity = sorted(a for a, n in per_agent.items() if n > CAPACITY)
        in_loads: Counter[str] = Counter()
        for n in range(AGENTS):
            agent_id = f"agent-{n:03d}"
            load = set(await one.backends.agents.held(agent_id))
            in_loads.update(load)
            result.uncounted += sum(1 for name, a in offers.items() if a == agent_id and name not in load)
        result.double_counted = sum(1 for n in in_loads.values() if n > 1)
        return result
    finally:
        await one.backends.close()
        await other.backends.close()


async def measure(url: str, args: argparse.Namespace) -> None:
    logger.info("| what | median | p99 |")
    logger.info("|---|---|---|")
    for waiting in IDLE_QUEUES:
        median, high = await idle(url, waiting, args.rounds, args.profile)
        logger.info(
            "| idle round, %s waiting (manual) | %.2f ms | %.2f ms |",
            f"{waiting:,}",
            median * 1e3,
            high * 1e3,
        )

    rounds, seconds, made = await throughput(url, args.waiting)
    logger.info(
        "| offer %s waiting to %d agents x %d (auto) | %d offers in %d rounds, %.0f ms | %.0f offers/s |",
        f"{args.waiting:,}",
        AGENTS,
        CAPACITY,
        made,
        rounds,
        seconds * 1e3,
        made / seconds,
    )
    for agents, capacity in OFFER_ROOMS:
        runs = [
            await per_offer(
                url, args.waiting, agents, capacity, rep, args.profile and rep == 0 and capacity == CAPACITY
            )
            for rep in range(args.reps)
        ]
        full = statistics.median(r[0] for r in runs)
        after = statistics.median(r[1] for r in runs)
        made = runs[0][2]
        logger.info(
            "| a round making %d offers (%d agents x %d), %s waiting | %.1f ms (next round %.1f ms) | %.0f µs per offer |",
            made,
            agents,
            capacity,
            f"{args.waiting:,}",
            full * 1e3,
            after * 1e3,
            (full - after) / made * 1e6,
        )

    raced = await race(url, args.race_waiting)
    logger.info(
        "| two routers racing, %s waiting, %d agents x %d | %d rounds, %.0f ms | made %d + %d, refused %d "
        "(other got there first), at capacity %d + %d |",
        f"{args.race_waiting:,}",
        AGENTS,
        CAPACITY,
        raced.rounds,
        raced.seconds * 1e3,
        *raced.made,
        raced.refused,
        *raced.at_capacity,
    )
    logger.info(
        "%s: %d conversations offered (%d made by the two routers), agents over capacity: %s; "
        "offers missing from their agent's load: %d; conversations in two loads: %d",
        "PASS" if raced.passed else "FAIL",
        raced.offered,
        sum(raced.made),
        ", ".join(raced.over_capacity) or "none",
        raced.uncounted,
        raced.double_counted,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=50, help="idle rounds timed per queue length")
    parser.add_argument("--waiting", type=int, default=1_000, help="the queue of the offer scenarios")
    parser.add_argument(
        "--race-waiting", type=int, default=1_500, help="the queue of the race (past the room)"
    )
    parser.add_argument("--reps", type=int, default=3, help="fresh queues per offer round measured")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile an idle round and a 1,000-offer round"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("app").setLevel(logging.WARNING)
    with temporary_redis() as server:
        asyncio.run(measure(server.url, args))


if __name__ == "__main__":
    main()
