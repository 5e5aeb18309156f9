"""``python -m bench.bot_costs``: what the bot's fence and the webhook queue cost on Redis.

A redis-server of its own on a free loopback port and the app's real backends (the store with
its command pipe, the broker), driven directly (no HTTP), one thing at a time:

- fence: a streamed reply's piece passes ``bot_may_speak`` then ``bot_has_spoken`` (two round
  trips); µs per piece for one reply, and pieces per second for ``--replies`` replies at once;
- takeover: the takeover of a ``bot_active`` session (which then checks for leases: one more
  round trip) against one of a ``waiting_agent`` session (which does not), median µs;
- webhooks: escalate + takeover + release + close, with and without the webhook queue's entry
  in each action's script, median µs per action.
"""

import argparse
import asyncio
import functools
import logging
import statistics
import time
from collections.abc import Awaitable, Callable

from app.backends import Backends, open_backends
from app.domain import announcements
from app.domain.store import Action
from app.domain.store.base import Announce
from app.process.settings import Settings
from tests.support.redis_server import temporary_redis

logger = logging.getLogger(__name__)


LIFECYCLE: tuple[tuple[Action, str | None], ...] = (
    ("escalate", None),
    ("takeover", "a1"),
    ("release", "a1"),
    ("close", None),
)


def announce(action: Action, agent: str | None, webhooks: bool) -> Announce:
    source = "ai_chatbot" if action == "escalate" else "agent_workbench"
    return functools.partial(
        announcements.of_transition, action=action, source=source, agent_id=agent, webhooks=webhooks
    )


async def timed(step: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await step()
    return (time.perf_counter() - started) * 1e6


async def fence(backends: Backends, pieces: int, replies: int) -> tuple[float, float]:
    store = backends.store
    session = await store.create("fence-0")

    async def piece(name: str, seq: int, token: str) -> None:
        assert await store.bot_may_speak(name, seq, token)
        await store.bot_has_spoken(name, token)

    one = [await timed(lambda: piece("fence-0", session["status_seq"], "t0")) for _ in range(pieces)]
    sessions = [await store.create(f"fence-{n + 1}") for n in range(replies)]

    async def reply(n: int) -> None:
        for _ in range(pieces // replies):
            await piece(sessions[n]["session_name"], sessions[n]["status_seq"], f"t{n}")

    started = time.perf_counter()
    await asyncio.gather(*(reply(n) for n in range(replies)))
    rate = (pieces // replies) * replies / (time.perf_counter() - started)
    return statistics.median(one), rate


async def takeovers(backends: Backends, count: int) -> tuple[float, float]:
    store = backends.store
    from_bot, from_queue = [], []
    for n in range(count):
        await store.create(f"tb-{n}")
        from_bot.append(await timed(lambda n=n: store.apply(f"tb-{n}", "takeover", "a1")))  # type: ignore[misc]
        await store.create(f"tq-{n}")
        await store.apply(f"tq-{n}", "escalate")
        from_queue.append(await timed(lambda n=n: store.apply(f"tq-{n}", "takeover", "a1")))  # type: ignore[misc]
    return statistics.median(from_bot), statistics.median(from_queue)


async def lifecycle(backends: Backends, count: int, webhooks: bool) -> float:
    store = backends.store
    spent: list[float] = []
    for n in range(count):
        name = f"w{int(webhooks)}-{n}"
        await store.create(name)
        for action, agent in LIFECYCLE:
            step = functools.partial(
                store.apply, name, action, agent, announce=announce(action, agent, webhooks)
            )
            spent.append(await timed(step))
    return statistics.median(spent)


async def measure(url: str, args: argparse.Namespace) -> None:
    backends = await open_backends(Settings(redis_url=url, insecure=True))
    try:
        one, rate = await fence(backends, args.pieces, args.replies)
        logger.info("| fence, one reply | %.0f µs per piece |", one)
        logger.info("| fence, %d replies at once | %.0f pieces/s |", args.replies, rate)
        bot, queue = await takeovers(backends, args.count)
        logger.info("| takeover of a bot_active session (lease check) | %.0f µs |", bot)
        logger.info("| takeover of a waiting_agent session | %.0f µs |", queue)
        without = await lifecycle(backends, args.count, webhooks=False)
        with_queue = await lifecycle(backends, args.count, webhooks=True)
        logger.info("| an action, no webhooks | %.0f µs |", without)
        logger.info("| an action, with its webhook entry | %.0f µs |", with_queue)
    finally:
        await backends.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pieces", type=int, default=20_000)
    parser.add_argument("--replies", type=int, default=32)
    parser.add_argument("--count", type=int, default=2_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with temporary_redis() as server:
        asyncio.run(measure(server.url, args))


if __name__ == "__main__":
    main()
