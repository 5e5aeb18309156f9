"""``python -m bench.reader_cost``: the pub/sub reader's CPU per message.

A redis-server of its own on a free loopback port, a RedisBroker (so one PubSubConnection)
with one subscription per channel on ``--channels`` channels, each consuming by write-through
(as an SSE stream whose socket has room does), and ``--events`` events published by a separate
process, round-robin over the channels: ``--mode script`` through the real publish script
(RedisEventLog.append, ``--in-flight`` at a time: a few events per read, as under a steady
load), ``--mode burst`` as pipelined PUBLISHes of what the script publishes (``<id> <json>``,
1,000 per round trip: the reader reads as much as the socket holds). Reported: this process's
CPU (time.process_time, user and system) per event consumed, from the first publish to the
last event received.
"""

import argparse
import asyncio
import logging
import sys
import time
from contextlib import AsyncExitStack

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from realtime.event_log import RedisEventLog
from realtime.events import Event, validated
from realtime.redis_broker import KeyLayout, RedisBroker
from tests.support.broker import event
from tests.support.redis_server import temporary_redis

logger = logging.getLogger(__name__)

BURST = 1000  # PUBLISHes per round trip in --mode burst


def channel_name(i: int) -> str:
    return f"agent:bench{i}"


def publish_burst(url: str, channels: int, events: int) -> None:
    """The publisher process, ``--mode burst``: pipelined PUBLISHes, ids as the script makes them."""
    redis = SyncRedis.from_url(url)
    data = validated(event(1))
    ms = int(time.time() * 1000)
    for start in range(0, events, BURST):
        pipe = redis.pipeline(transaction=False)
        for n in range(start, min(start + BURST, events)):
            pipe.publish(channel_name(n % channels), f"{ms}-{n} {data}")
        pipe.execute()
    redis.close()


async def publish(url: str, channels: int, events: int, in_flight: int) -> None:
    """The publisher process, ``--mode script``: ``events`` events through the publish script."""
    redis = Redis.from_url(url, max_connections=in_flight)
    log = RedisEventLog(redis, KeyLayout())
    data = validated(event(1))
    queue = iter(range(events))

    async def worker() -> None:
        for n in queue:
            await log.append(channel_name(n % channels), data)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    await redis.aclose()


async def consume(url: str, mode: str, channels: int, events: int, in_flight: int) -> float:
    """Subscribe, start the publisher, and return CPU µs per event received."""
    received = 0
    done = asyncio.Event()

    def writer(_: Event) -> bool:
        nonlocal received
        received += 1
        if received == events:
            done.set()
        return True

    client = Redis.from_url(url)
    broker = RedisBroker(client)
    assert await broker.start(wait=5)
    async with AsyncExitStack() as stack:
        for i in range(channels):
            subscription = await stack.enter_async_context(broker.subscribe(channel_name(i)))
            subscription.write_through(writer)
        command = [sys.executable, "-m", "bench.reader_cost", "--publish", url, "--mode", mode]
        command += ["--channels", str(channels), "--events", str(events), "--in-flight", str(in_flight)]
        cpu, wall = time.process_time(), time.monotonic()
        publisher = await asyncio.create_subprocess_exec(*command)
        try:
            await asyncio.wait_for(done.wait(), timeout=300)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        finally:
            if publisher.returncode is None and not done.is_set():
                publisher.kill()
            await publisher.wait()
    await broker.close()
    await client.aclose()
    logger.info("%d events in %.2f s (%.0f/s)", events, wall, events / wall)
    return cpu / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("script", "burst"), default="script")
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.publish and args.mode == "burst":
        publish_burst(args.publish, args.channels, args.events)
        return
    if args.publish:
        asyncio.run(publish(args.publish, args.channels, args.events, args.in_flight))
        return
    with temporary_redis() as server:
        costs = [
            asyncio.run(consume(server.url, args.mode, args.channels, args.events, args.in_flight))
            for _ in range(args.runs)
        ]
    logger.info("%s: reader CPU per event (µs): %s", args.mode, ", ".join(f"{c:.1f}" for c in costs))
    logger.info("best %.1f µs, median %.1f µs", min(costs), sorted(costs)[len(costs) // 2])


if __name__ == "__main__":
    main()
