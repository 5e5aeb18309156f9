"""The broker contract: RedisBroker and MemoryBroker publish, order, fan out, validate, bound
their queues and release their channels the same way (Redis against a real redis-server)."""

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from marshmallow import ValidationError
from redis.asyncio import Redis

from realtime import ids
from realtime.broker import (
    DEFAULT_QUEUE_SIZE,
    Broker,
    Subscription,
    SubscriptionClosed,
    SubscriptionOverflow,
)
from realtime.events import Event, encode, envelope
from realtime.memory_broker import MemoryBroker
from realtime.redis_broker import CLOCK_KEY, RedisBroker, history_key
from tests.support.broker import SETTLE, assert_quiet, event, take
from tests.support.wait import poll

BROKER_KINDS = ("memory", "redis")

BrokerFactory = Callable[..., Awaitable[Broker]]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    result: str = request.param
    return result


@pytest.fixture
def broker_redis_url(broker_kind: str, request: pytest.FixtureRequest) -> str | None:
    """The suite's redis-server (flushed) for the Redis broker; None for the memory one."""
    if broker_kind == "redis":
        result: str | None = request.getfixturevalue("redis_url")
        return result
    return None


@pytest.fixture
async def make_broker(broker_kind: str, broker_redis_url: str | None) -> AsyncIterator[BrokerFactory]:
    """``await make_broker(queue_size=...)``: a started broker of the parametrized kind."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(queue_size: int = DEFAULT_QUEUE_SIZE, history_size: int = 1000) -> Broker:
        if broker_kind == "memory":
            memory = MemoryBroker(queue_size=queue_size, history_size=history_size)
            cleanups.append(memory.close)
            return memory
        assert broker_redis_url is not None
        client = Redis.from_url(broker_redis_url)
        cleanups.append(client.aclose)
        redis_broker = RedisBroker(client, queue_size=queue_size, history_maxlen=history_size)
        assert await redis_broker.start(wait=5)
        cleanups.append(redis_broker.close)
        return redis_broker

    yield make
    errors: list[BaseException] = []
    for cleanup in reversed(cleanups):  # broker before its client
        try:
            await cleanup()
        except Exception as exc:  # close everything, then report the first failure
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> Broker:
    return await make_broker()


@pytest.fixture
async def admin(broker_redis_url: str | None) -> AsyncIterator[Redis | None]:
    """A separate Redis client for inspecting the server (None for the memory broker)."""
    if broker_redis_url is None:
        yield None
        return
    client = Redis.from_url(broker_redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    """A started RedisBroker, for the Redis-only tests."""
    client = Redis.from_url(redis_url)
    broker = RedisBroker(client)
    try:
        assert await broker.start(wait=5)
        yield broker
    finally:
        try:
            await broker.close()
        finally:
            await client.aclose()


# --------------------------------------------------------------------------- helpers


def fresh_channel() -> str:
    return f"sse:session:t{uuid.uuid4().hex[:16]}"


def number(received: Event) -> int:
    return int(received.envelope["payload"]["agent_id"][1:])


async def numsub(admin: Redis, channel: str) -> int:
    [(_, count)] = await admin.pubsub_numsub(channel)
    return int(count)


async def assert_released(broker: Broker, admin: Redis | None, *channels: str) -> None:
    """No local subscriber on any of ``channels`` and, for Redis, no server-side subscriber."""
    for channel in channels:
        assert broker.local_subscribers(channel) == 0, channel
    if admin is None:
        return

    async def all_zero() -> bool:
        counts = await admin.pubsub_numsub(*channels)
        return all(int(count) == 0 for _, count in counts)

    assert (await poll(all_zero, timeout=SETTLE, interval=0.01)).ok, {
        c: await numsub(admin, c) for c in channels
    }
    still = set(await admin.pubsub_channels()) & set(channels)
    assert not still, still


async def publish_raw(admin: Redis, channel: str, data: str | bytes) -> int:
    """PUBLISH straight to Redis, bypassing the broker; returns how many connections got it."""
    return int(await admin.publish(channel, data))


# --------------------------------------------------------------------------- ids


async def test_publish_ids_strictly_increase_per_channel(broker: Broker) -> None:
    """publish returns a well-formed event id, and ids strictly increase within each channel."""
    first, second = fresh_channel(), fresh_channel()
    published: dict[str, list[str]] = {first: [], second: []}
    for n in range(60):
        channel = first if n % 3 else second
        event_id = await broker.publish(channel, event(n))
        assert isinstance(event_id, str)
        assert ids.is_event_id(event_id), event_id
        published[channel].append(event_id)
    for channel, channel_ids in published.items():
        parsed = [ids.parse(event_id) for event_id in channel_ids]
        assert all(a < b for a, b in itertools.pairwise(parsed)), (channel, channel_ids)
        assert len(set(channel_ids)) == len(channel_ids)


async def test_received_id_equals_published_id(broker: Broker) -> None:
    """The Event a subscriber receives carries the id publish returned, its channel and envelope."""
    channel = fresh_channel()
    async with broker.subscribe(channel) as subscription:
        sent = [event(n) for n in range(10)]
        published = [await broker.publish(channel, item) for item in sent]
        received = await take(subscription, 10)
    assert [item.id for item in received] == published
    assert all(item.channel == channel for item in received)
    assert [item.envelope for item in received] == sent
    assert [item.data for item in received] == [encode(item) for item in sent]
    assert received[0].frame == f"id: {published[0]}\ndata: {encode(sent[0])}\n\n".encode()


# --------------------------------------------------------------------------- delivery


async def test_events_arrive_in_publish_order(broker: Broker) -> None:
    """200 events on one channel reach a subscriber in the order they were published."""
    channel = fresh_channel()
    async with broker.subscribe(channel) as subscription:
        published = [await broker.publish(channel, event(n)) for n in range(200)]
        received = await take(subscription, 200, timeout=5)
        await assert_quiet(subscription, 0.05)
    assert [number(item) for item in received] == list(range(200))
    assert [item.id for item in received] == published


async def test_fan_out_to_every_subscription(broker: Broker) -> None:
    """50 subscriptions on one channel each receive every event, in order."""
    channel = fresh_channel()
    async with AsyncExitStack() as stack:
        subscriptions = [await stack.enter_async_context(broker.subscribe(channel)) for _ in range(50)]
        assert broker.local_subscribers(channel) == 50
        published = [await broker.publish(channel, event(n)) for n in range(20)]
        results = await asyncio.gather(*(take(sub, 20) for sub in subscriptions))
        for received in results:
            assert [item.id for item in received] == published
            assert [number(item) for item in received] == list(range(20))
        await asyncio.gather(*(assert_quiet(sub, 0.02) for sub in subscriptions))
    assert broker.local_subscribers(channel) == 0


async def test_multi_channel_subscription(broker: Broker) -> None:
    """subscribe(ch1, ch2) receives the events of both channels, each Event naming its channel."""
    first, second = fresh_channel(), fresh_channel()
    async with broker.subscribe(first, second) as subscription:
        assert subscription.channels == (first, second)
        expected: list[tuple[str, str, int]] = []
        for n in range(10):
            channel = first if n % 2 == 0 else second
            expected.append((channel, await broker.publish(channel, event(n)), n))
        received = await take(subscription, 10)
        await assert_quiet(subscription, 0.05)
    assert [(item.channel, item.id, number(item)) for item in received] == expected


async def test_no_events_from_unsubscribed_channels(broker: Broker) -> None:
    """A subscription receives nothing published on channels it did not subscribe to."""
    mine, other = fresh_channel(), fresh_channel()
    async with broker.subscribe(mine) as subscription, broker.subscribe(other) as witness:
        for n in range(5):
            await broker.publish(other, event(n))
        marker = await broker.publish(mine, event(99))
        [first] = await take(subscription, 1)
        assert (first.id, first.channel, number(first)) == (marker, mine, 99)
        await assert_quiet(subscription)
        # the other channel's events were really published and delivered to its own subscriber
        assert [number(item) for item in await take(witness, 5)] == list(range(5))


# --------------------------------------------------------------------------- join / leave


async def test_exit_releases_channels(broker: Broker, admin: Redis | None) -> None:
    """Leaving ``async with`` leaves no local subscriber and (Redis) no server-side subscription."""
    first, second = fresh_channel(), fresh_channel()
    async with broker.subscribe(first, second):
        assert broker.local_subscribers(first) == broker.local_subscribers(second) == 1
        if admin is not None:
            assert await numsub(admin, first) == await numsub(admin, second) == 1
    await assert_released(broker, admin, first, second)
    assert broker.local_channels == 0


async def test_exit_by_exception_releases_channels(broker: Broker, admin: Redis | None) -> None:
    """An exception leaving the ``async with`` block still releases the channels."""
    channel = fresh_channel()
    with pytest.raises(LookupError):
        async with broker.subscribe(channel):
            raise LookupError("boom")
    await assert_released(broker, admin, channel)


async def test_cancelled_consumer_releases_channels(broker: Broker, admin: Redis | None) -> None:
    """A consuming task cancelled while blocked in get() still releases its channels."""
    channel = fresh_channel()
    entered = asyncio.Event()

    async def consume() -> None:
        async with broker.subscribe(channel) as subscription:
            entered.set()
            await subscription.get()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(SETTLE):
        await entered.wait()
    await asyncio.sleep(0.01)  # let it block in get()
    assert broker.local_subscribers(channel) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_released(broker, admin, channel)
    assert broker.local_channels == 0


async def test_concurrent_joins_and_leaves(broker: Broker, admin: Redis | None) -> None:
    """100 tasks joining and leaving shared channels at once leave nothing subscribed, and a
    subscription open through the churn still receives events."""
    channels = [fresh_channel() for _ in range(4)]
    rng = random.Random(1234)
    delays = [rng.uniform(0, 0.01) for _ in range(100)]

    async def churn(index: int) -> None:
        mine = channels[index % len(channels)]
        extra = channels[(index + 1) % len(channels)]
        chosen = (mine, extra) if index % 3 == 0 else (mine,)
        await asyncio.sleep(delays[index] / 2)
        async with broker.subscribe(*chosen):
            assert broker.local_subscribers(mine) >= 1
            await asyncio.sleep(delays[index])

    async with broker.subscribe(channels[0]) as keeper:
        async with asyncio.timeout(10):
            await asyncio.gather(*(churn(index) for index in range(100)))
        assert broker.local_subscribers(channels[0]) == 1
        await assert_released(broker, admin, *channels[1:])
        if admin is not None:
            assert await numsub(admin, channels[0]) == 1
        published = await broker.publish(channels[0], event(7))
        [received] = await take(keeper, 1)
        assert (received.id, number(received)) == (published, 7)
    await assert_released(broker, admin, *channels)
    assert broker.local_channels == 0


async def test_churn_with_cancellations(broker: Broker, admin: Redis | None) -> None:
    """Joins and leaves cancelled at random points (even mid-join) release everything, never
    disturb the tasks that were not cancelled, and leave the channels usable."""
    channels = [fresh_channel() for _ in range(3)]
    rng = random.Random(99)

    async def member(index: int) -> str:
        await asyncio.sleep(rng.uniform(0, 0.003))
        async with broker.subscribe(channels[index % len(channels)]):
            await asyncio.sleep(rng.uniform(0, 0.005))
        return "done"

    tasks = [asyncio.create_task(member(index)) for index in range(100)]
    doomed = sorted(rng.sample(range(100), 40))
    victims = set(doomed)
    for _ in range(6):
        await asyncio.sleep(rng.uniform(0, 0.002))
        for index in doomed[: len(doomed) // 2 + 1]:
            tasks[index].cancel()
        doomed = doomed[len(doomed) // 2 + 1 :]
    for index in doomed:
        tasks[index].cancel()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*tasks, return_exceptions=True)
    disturbed = {
        index: repr(result)
        for index, result in enumerate(results)
        if index not in victims and result != "done"
    }
    assert not disturbed, f"tasks that were never cancelled did not finish: {disturbed}"
    await assert_released(broker, admin, *channels)
    for channel in channels:  # the channels still work after the churn
        async with broker.subscribe(channel) as subscription:
            published = await broker.publish(channel, event(1))
            [received] = await take(subscription, 1)
            assert received.id == published
    await assert_released(broker, admin, *channels)


BUSY_SCRIPT = """
local started = redis.call('TIME')
local start = tonumber(started[1]) * 1000000 + tonumber(started[2])
repeat
    local now = redis.call('TIME')
until tonumber(now[1]) * 1000000 + tonumber(now[2]) - start >= tonumber(ARGV[1])
return 1
"""


async def hold_server_busy(admin: Redis, seconds: float) -> None:
    """Keep the (single-threaded) redis-server busy in a script: replies wait until it ends."""
    await admin.eval(BUSY_SCRIPT, 0, int(seconds * 1_000_000))


async def test_cancelled_join_does_not_fail_concurrent_join(broker: Broker, admin: Redis | None) -> None:
    """Of two tasks joining a fresh channel at once, cancelling one while both wait for Redis to
    confirm the subscription does not fail or cancel the other, which enters and receives."""
    for trial in range(3):
        channel = fresh_channel()
        busy: asyncio.Task[None] | None = None
        if admin is not None:  # hold the SUBSCRIBE confirmation back for a while
            busy = asyncio.create_task(hold_server_busy(admin, 0.2))
            await asyncio.sleep(0.03)
        entered = {"a": asyncio.Event(), "b": asyncio.Event()}

        async def join(name: str, channel: str, entered: dict[str, asyncio.Event]) -> Event | None:
            async with broker.subscribe(channel) as subscription:
                entered[name].set()
                return await subscription.get(timeout=SETTLE)

        first = asyncio.create_task(join("a", channel, entered))
        second = asyncio.create_task(join("b", channel, entered))
        async with asyncio.timeout(SETTLE):
            while broker.local_subscribers(channel) < 2:
                await asyncio.sleep(0.001)
        await asyncio.sleep(0.02)  # both now wait for the confirmation
        first.cancel()
        if busy is not None:
            await busy
        async with asyncio.timeout(SETTLE):
            while not entered["b"].is_set() and not second.done():
                await asyncio.sleep(0.005)
        if second.done():
            outcome = "cancelled" if second.cancelled() else repr(second.exception())
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            pytest.fail(f"trial {trial}: the join that was not cancelled ended: {outcome}")
        with pytest.raises(asyncio.CancelledError):
            await first
        assert broker.local_subscribers(channel) == 1
        published = await broker.publish(channel, event(trial))
        async with asyncio.timeout(SETTLE):
            received = await second
        assert received is not None and received.id == published
        await assert_released(broker, admin, channel)


async def test_subscription_live_when_entered(broker: Broker) -> None:
    """An event published right after ``__aenter__`` returns is received (no subscribe race)."""
    for n in range(20):
        first, second = fresh_channel(), fresh_channel()
        async with broker.subscribe(first, second) as subscription:
            target = second if n % 2 else first
            published = await broker.publish(target, event(n))
            received = await subscription.get(timeout=SETTLE)
            assert received is not None, f"event {n} published right after entering was lost"
            assert (received.id, received.channel) == (published, target)


# --------------------------------------------------------------------------- validation


def _invalid_events() -> list[tuple[str, Any]]:
    good = event()

    def changed(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    without_source = dict(good)
    del without_source["source"]
    return [
        ("unknown field", changed(extra="x")),
        ("unknown type", changed(type="nope")),
        ("bad source", changed(source="client")),
        ("timestamp as string", changed(timestamp="123")),
        ("timestamp as bool", changed(timestamp=True)),
        ("timestamp as float", changed(timestamp=1.5)),
        ("negative timestamp", changed(timestamp=-1)),
        ("missing source", without_source),
        ("payload not an object", changed(payload=["s1"])),
        ("payload missing keys", changed(payload={})),
        ("payload of another type", changed(payload={"session_name": "s1", "status": "closed"})),
        ("payload unknown key", changed(payload={"session_name": "s1", "agent_id": "a1", "x": 1})),
        ("payload bad name", changed(payload={"session_name": "s 1", "agent_id": "a1"})),
        ("not an object", ["agent_joined"]),
        ("null", None),
    ]


async def test_invalid_events_rejected_on_publish(broker: Broker, admin: Redis | None) -> None:
    """An invalid envelope raises ValidationError on publish and nothing is delivered or stored."""
    channel = fresh_channel()
    async with broker.subscribe(channel) as subscription:
        for label, bad in _invalid_events():
            with pytest.raises(ValidationError):
                await broker.publish(channel, bad)
            assert (await broker.history([channel], ids.ZERO)).events == [], label
        await assert_quiet(subscription)
        if admin is not None:
            assert await admin.exists(history_key(channel)) == 0
        marker = await broker.publish(channel, event(5))  # the channel still works
        [received] = await take(subscription, 1)
        assert received.id == marker
        await assert_quiet(subscription, 0.05)


async def test_malformed_redis_messages_dropped(redis_broker: RedisBroker, redis: Redis) -> None:
    """Garbage PUBLISHed straight to Redis is dropped and counted; the valid event after it
    arrives."""
    channel = fresh_channel()
    valid_json = encode(event(1))
    garbage: list[str] = [
        "not json",
        valid_json,  # no "<id> " prefix
        "1-0 not json",
        "1-0 " + encode({**event(1), "extra": True}),  # valid JSON, invalid envelope
        "1-0 " + encode({**event(1), "payload": {}}),  # payload not matching its type
        "1-0 [1, 2, 3]",
        "1-0 null",
        "1-0",
        "",
        "abc-1 " + valid_json,
    ]
    async with redis_broker.subscribe(channel) as subscription:
        for raw in garbage:
            assert await publish_raw(redis, channel, raw) == 1
        published = await redis_broker.publish(channel, event(2))
        [received] = await take(subscription, 1)
        assert (received.id, number(received)) == (published, 2)
        assert redis_broker.stats.malformed == len(garbage)
        await assert_quiet(subscription)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xfe not utf-8", id="not-utf8"),
        pytest.param(b"1-0 \xff{}", id="not-utf8-after-id"),
        pytest.param("1-0 " + "[" * 100_000, id="deeply-nested-json"),
        pytest.param("\u00b2-0 " + encode(event(1)), id="non-ascii-digit-id"),
    ],
)
async def test_hostile_redis_message_dropped(
    redis_broker: RedisBroker, redis: Redis, raw: str | bytes
) -> None:
    """A hostile message on Redis is dropped and counted, and the stream goes on delivering."""
    channel = fresh_channel()
    async with redis_broker.subscribe(channel) as subscription:
        assert await publish_raw(redis, channel, raw) == 1
        published = await redis_broker.publish(channel, event(2))
        received = await subscription.get(timeout=1.0)
        assert received is not None, "the stream stopped delivering after a malformed message"
        assert (received.id, number(received)) == (published, 2)
        assert redis_broker.stats.malformed == 1
        await assert_quiet(subscription, 0.05)


# --------------------------------------------------------------------------- bounded queues


async def test_slow_subscriber_cut_off(make_broker: BrokerFactory) -> None:
    """A subscription that stops reading is cut off with SubscriptionOverflow once its queue
    (queue_size=5) is full, while the subscriptions that read keep receiving everything."""
    broker = await make_broker(queue_size=5)
    channel = fresh_channel()
    fast_received: list[Event] = []

    async def read_fast(subscription: Subscription) -> None:
        async for item in subscription:
            fast_received.append(item)

    async def fast_has(count: int) -> None:
        async with asyncio.timeout(SETTLE):
            while len(fast_received) < count:
                await asyncio.sleep(0.001)

    async with (
        broker.subscribe(channel) as fast,
        broker.subscribe(channel) as slow_get,
        broker.subscribe(channel) as slow_iter,
    ):
        reader = asyncio.create_task(read_fast(fast))
        try:
            published: list[str] = []
            for n in range(15):
                published.append(await broker.publish(channel, event(n)))
                await fast_has(n + 1)  # the fast reader keeps up before the next publish
            assert broker.stats.slow_consumers == 2
            with pytest.raises(SubscriptionOverflow):
                await slow_get.get(timeout=SETTLE)
            with pytest.raises(SubscriptionOverflow):
                await slow_get.get(timeout=SETTLE)  # stays cut off
            with pytest.raises(SubscriptionOverflow):
                async with asyncio.timeout(SETTLE):
                    async for _ in slow_iter:
                        pass
            assert [item.id for item in fast_received] == published
            published.append(await broker.publish(channel, event(15)))
            await fast_has(16)
            assert [item.id for item in fast_received] == published
            assert broker.stats.slow_consumers == 2
        finally:
            fast.close()
            async with asyncio.timeout(SETTLE):
                await reader
    assert broker.local_subscribers(channel) == 0


async def test_queue_holds_up_to_its_size(make_broker: BrokerFactory) -> None:
    """A subscription that reads late loses nothing while no more than queue_size events wait."""
    broker = await make_broker(queue_size=5)
    channel = fresh_channel()
    async with broker.subscribe(channel) as subscription:
        published = [await broker.publish(channel, event(n)) for n in range(5)]
        await asyncio.sleep(0.05)
        received = await take(subscription, 5)
        assert [item.id for item in received] == published
        assert broker.stats.slow_consumers == 0


# --------------------------------------------------------------------------- ending


async def test_close_ends_iteration(broker: Broker) -> None:
    """subscription.close() ends ``async for`` cleanly, after the events already queued."""
    channel = fresh_channel()
    async with broker.subscribe(channel) as subscription, broker.subscribe(channel) as witness:
        published = [await broker.publish(channel, event(n)) for n in range(3)]
        await take(witness, 3)  # fanned out to both: all three now wait in ``subscription``
        subscription.close()
        received: list[Event] = []
        async with asyncio.timeout(SETTLE):
            async for item in subscription:
                received.append(item)
        assert [item.id for item in received] == published
        with pytest.raises(SubscriptionClosed):
            await subscription.get(timeout=0.05)

    async with broker.subscribe(channel) as waiting:
        results: list[Event] = []

        async def consume() -> None:
            async for item in waiting:
                results.append(item)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.02)  # blocked in the iteration
        waiting.close()
        async with asyncio.timeout(SETTLE):
            await task  # ends without an exception
        assert results == []


async def test_broker_close_ends_subscriptions(broker: Broker) -> None:
    """broker.close() ends every open subscription: iterations finish, get() raises Closed."""
    first, second = fresh_channel(), fresh_channel()
    results: dict[str, list[Event]] = {first: [], second: []}
    entered = asyncio.Event()
    count = 0

    async def consume(channel: str) -> str:
        nonlocal count
        async with broker.subscribe(channel) as subscription:
            count += 1
            if count == 2:
                entered.set()
            async for item in subscription:
                results[channel].append(item)
        return "ended"

    tasks = [asyncio.create_task(consume(first)), asyncio.create_task(consume(second))]
    async with asyncio.timeout(SETTLE):
        await entered.wait()
    one = await broker.publish(first, event(1))
    async with asyncio.timeout(SETTLE):
        while not results[first]:
            await asyncio.sleep(0.005)
    async with broker.subscribe(second) as idle:
        await broker.close()
        async with asyncio.timeout(SETTLE):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert outcomes == ["ended", "ended"], [repr(outcome) for outcome in outcomes]
        with pytest.raises(SubscriptionClosed):
            await idle.get(timeout=SETTLE)
    assert [item.id for item in results[first]] == [one]
    assert results[second] == []


# --------------------------------------------------------------------------- position and history


async def test_position(broker: Broker) -> None:
    """The position is below every id yet to come (the memory broker starts at "0-0", Redis at
    the moment its clock first ran), then the newest id given out on any channel."""
    first, second = fresh_channel(), fresh_channel()
    start = await broker.position()
    assert ids.is_event_id(start)
    one = await broker.publish(first, event(1))
    assert ids.parse(one) > ids.parse(start)
    assert await broker.position() == one
    two = await broker.publish(second, event(2))
    assert await broker.position() == two
    assert ids.parse(two) > ids.parse(one)


async def test_history_merges_channels_in_order(broker: Broker) -> None:
    """history(channels, after) holds each event after the position, across channels, in
    publish order, and says it is complete."""
    first, second, other = fresh_channel(), fresh_channel(), fresh_channel()
    published = []
    for n in range(10):
        channel = (first, second, other)[n % 3]
        published.append((channel, await broker.publish(channel, event(n))))
    start = published[2][1]
    history = await broker.history([first, second], start)
    expected = [i for c, i in published[3:] if c in (first, second)]
    assert [e.id for e in history.events] == expected
    assert history.complete
    assert [e.channel for e in history.events] == [c for c, _ in published[3:] if c != other]
    everything = await broker.history([first, second, other], ids.ZERO)
    assert [e.id for e in everything.events] == [i for _, i in published]


async def test_history_of_unknown_channels_is_empty_and_complete(broker: Broker) -> None:
    """A channel that never had an event has an empty, complete history."""
    await broker.publish(fresh_channel(), event(0))
    history = await broker.history([fresh_channel()], await broker.position())
    assert history.events == [] and history.complete


async def test_trimmed_history_is_incomplete(make_broker: BrokerFactory) -> None:
    """Once the history bound has pushed events out, a position before them is incomplete,
    and a position after them is still complete."""
    broker = await make_broker(history_size=10)
    channel = fresh_channel()
    published = [await broker.publish(channel, event(n)) for n in range(300)]
    old = await broker.history([channel], published[0])
    assert not old.complete
    recent = await broker.history([channel], published[-5])
    assert recent.complete
    assert [e.id for e in recent.events] == published[-4:]


async def test_fresh_subscription_starts_at_the_position(broker: Broker) -> None:
    """A subscription that does not resume starts at the newest id: nothing older arrives,
    everything newer does."""
    channel = fresh_channel()
    await broker.publish(channel, event(0))
    async with broker.subscribe(channel) as subscription:
        assert subscription.position == await broker.position()
        assert subscription.recovered
        newer = await broker.publish(channel, event(1))
        assert [e.id for e in await take(subscription, 1)] == [newer]
        await assert_quiet(subscription)


async def test_resume_replays_then_goes_live(broker: Broker) -> None:
    """A subscription resumed from an id gets every later event of all its channels, in
    order and once, then the live ones; its position is the id it resumed from."""
    first, second = fresh_channel(), fresh_channel()
    start = await broker.publish(first, event(0))
    missed = [await broker.publish((first, second)[n % 2], event(n)) for n in range(1, 9)]
    async with broker.subscribe(first, second, resume_from=start) as subscription:
        assert subscription.position == start
        assert subscription.recovered
        live = await broker.publish(second, event(9))
        received = await take(subscription, 9)
        assert [e.id for e in received] == [*missed, live]
        await assert_quiet(subscription)


async def test_resume_from_lost_history_is_not_recovered(make_broker: BrokerFactory) -> None:
    """Resuming from before what the history still holds says recovered = False and
    delivers what is left."""
    broker = await make_broker(history_size=10)
    channel = fresh_channel()
    published = [await broker.publish(channel, event(n)) for n in range(300)]
    left = len((await broker.history([channel], published[0])).events)
    assert 10 <= left < 300  # Redis trims whole nodes ("MAXLEN ~"): at least the bound is kept
    async with broker.subscribe(channel, resume_from=published[0]) as subscription:
        assert not subscription.recovered
        received = await take(subscription, left)
        assert [e.id for e in received] == published[-left:]
        await assert_quiet(subscription)


@pytest.mark.parametrize("resume_from", ["garbage", "99999999999999-0", "", "1-x", "²-0"])
async def test_resume_from_an_id_never_given_out(broker: Broker, resume_from: str) -> None:
    """An id this broker never gave out (malformed, or in the future) is not recovered; the
    subscription starts at the current position and runs normally."""
    channel = fresh_channel()
    await broker.publish(channel, event(0))
    async with broker.subscribe(channel, resume_from=resume_from) as subscription:
        assert not subscription.recovered
        assert subscription.position == await broker.position()
        live = await broker.publish(channel, event(1))
        assert [e.id for e in await take(subscription, 1)] == [live]


# --------------------------------------------------------------------------- connections


async def test_one_pubsub_connection(redis_broker: RedisBroker, redis: Redis) -> None:
    """200 subscriptions on 200 channels, joined concurrently, share one pub/sub connection."""
    channels = [fresh_channel() for _ in range(200)]
    entered = 0
    all_entered = asyncio.Event()
    release = asyncio.Event()

    async def hold(channel: str) -> None:
        nonlocal entered
        async with redis_broker.subscribe(channel):
            entered += 1
            if entered == len(channels):
                all_entered.set()
            await release.wait()

    tasks = [asyncio.create_task(hold(channel)) for channel in channels]
    try:
        async with asyncio.timeout(10):
            await all_entered.wait()
        own_id = await redis.client_id()
        clients = [entry for entry in await redis.client_list() if int(entry["id"]) != own_id]

        def in_pubsub(entry: dict[str, str]) -> bool:
            return (
                int(entry.get("sub", 0)) > 0
                or int(entry.get("psub", 0)) > 0
                or int(entry.get("ssub", 0)) > 0
                or "P" in entry.get("flags", "")
                or entry.get("cmd") in ("subscribe", "unsubscribe", "psubscribe", "ssubscribe")
            )

        subscribers = [entry for entry in clients if in_pubsub(entry)]
        assert len(subscribers) == 1, subscribers
        assert int(subscribers[0]["sub"]) == len(channels)
        counts = dict(await redis.pubsub_numsub(*channels))
        assert all(int(counts[channel]) == 1 for channel in channels)
    finally:
        release.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
    assert redis_broker.local_channels == 0
    assert (await poll(lambda: _no_channels(redis, channels), timeout=SETTLE, interval=0.01)).ok


async def _no_channels(redis: Redis, channels: list[str]) -> bool:
    return not set(await redis.pubsub_channels()) & set(channels)


async def test_ids_increase_across_channels_of_one_subscription(broker: Broker) -> None:
    """Events of two channels published in the same millisecond still have increasing ids."""
    first, second = fresh_channel(), fresh_channel()
    async with broker.subscribe(first, second) as subscription:
        for n in range(20):
            await asyncio.gather(
                broker.publish(first, event(2 * n)), broker.publish(second, event(2 * n + 1))
            )
        received = await take(subscription, 40)
    parsed = [ids.parse(e.id) for e in received]
    assert parsed == sorted(parsed)
    assert len(set(parsed)) == 40


async def test_ids_survive_a_lost_clock(redis_broker: RedisBroker, redis: Redis) -> None:
    """If the event clock key is lost, the next event still gets an id above its history."""
    channel = fresh_channel()
    async with redis_broker.subscribe(channel) as subscription:
        before = await redis_broker.publish(channel, event(0))
        # The history reaches past the clock: an id from the clock alone would be refused.
        future_ms = ids.parse(before)[0] + 60_000
        await redis.xadd(history_key(channel), {"d": "{}"}, id=f"{future_ms}-0")
        await redis.set(CLOCK_KEY, "1-0")
        after = await redis_broker.publish(channel, event(1))
        received = await take(subscription, 2)
    assert ids.parse(after) > (future_ms, 0)
    assert [e.id for e in received] == [before, after]
    assert await redis.get(CLOCK_KEY) == after


FORGED = {
    "agent_joined-from-chatbot": envelope(
        "agent_joined", {"session_name": "s1", "agent_id": "a1"}, "ai_chatbot"
    ),
    "offer-from-chatbot": envelope(
        "offer",
        {"session_name": "s1", "expires_at": 1.5, "reason": None, "summary": None},
        "ai_chatbot",
    ),
    "agent-message-from-chatbot": envelope(
        "new_message",
        {
            "session_name": "s1",
            "message": {"id": "m1", "role": "agent", "content": "hi", "agent_id": "a1", "created_at": 1},
        },
        "ai_chatbot",
    ),
    "customer-message-from-workbench": envelope(
        "new_message",
        {
            "session_name": "s1",
            "message": {"id": "m1", "role": "customer", "content": "hi", "agent_id": None, "created_at": 1},
        },
        "agent_workbench",
    ),
    "customer-message-from-system": envelope(
        "new_message",
        {
            "session_name": "s1",
            "message": {"id": "m1", "role": "customer", "content": "hi", "agent_id": None, "created_at": 1},
        },
        "system",
    ),
}


@pytest.mark.parametrize("case", FORGED)
async def test_forged_events_are_refused_on_publish(broker: Broker, case: str) -> None:
    """A type/source pair the product never produces cannot be published."""
    with pytest.raises(ValidationError):
        await broker.publish(fresh_channel(), FORGED[case])


async def test_forged_events_from_redis_are_dropped(redis_broker: RedisBroker, redis: Redis) -> None:
    """Events written straight into Redis with a pair the product never produces (an agent
    that never joined, an agent's words from the chatbot side) never reach a subscriber."""
    channel = fresh_channel()
    async with redis_broker.subscribe(channel) as subscription:
        for n, forged in enumerate(FORGED.values(), start=1):
            await publish_raw(redis, channel, f"{n}-0 {encode(forged)}")
        # A valid event under an id from the future would make the subscription drop every
        # genuine event after it.
        future = envelope("agent_joined", {"session_name": "s1", "agent_id": "a1"}, "agent_workbench")
        await publish_raw(redis, channel, f"99999999999999-0 {encode(future)}")
        genuine = await redis_broker.publish(channel, event(0))
        received = await take(subscription, 1)
        await assert_quiet(subscription)
    assert [e.id for e in received] == [genuine]
    assert redis_broker.stats.malformed == len(FORGED) + 1


# --------------------------------------------------------------------------- ephemeral events


def typing_event(session: str = "s1") -> dict[str, Any]:
    return envelope("typing", {"session_name": session, "who": "bot"}, "ai_chatbot")


async def test_ephemeral_event_reaches_open_streams_without_an_id(make_broker: BrokerFactory) -> None:
    """A ``typing`` reaches the streams open now (on another process's broker too), framed
    without an id; it is in no history, moves no position, and the events around it keep
    their order."""
    publisher = await make_broker()
    # On Redis, another broker (another process's connection); in memory, the one process.
    reader = publisher if isinstance(publisher, MemoryBroker) else await make_broker()
    channel = fresh_channel()
    async with reader.subscribe(channel) as subscription:
        before = await publisher.publish(channel, event(1))
        await publisher.signal(channel, typing_event())
        after = await publisher.publish(channel, event(2))
        first, typing, last = await take(subscription, 3)
    assert (first.id, last.id) == (before, after)
    assert typing.envelope == typing_event() | {"timestamp": typing.envelope["timestamp"]}
    assert typing.frame.startswith(b"data: ") and b"id:" not in typing.frame
    assert await reader.position([channel]) == after
    history = await reader.history([channel], "0-0")
    assert [e.id for e in history.events] == [before, after]


async def test_ephemeral_event_is_never_replayed(broker: Broker) -> None:
    channel = fresh_channel()
    first = await broker.publish(channel, event(1))
    await broker.signal(channel, typing_event())
    second = await broker.publish(channel, event(2))
    async with broker.subscribe(channel, resume_from=first) as subscription:
        [replayed] = await take(subscription, 1)
        await assert_quiet(subscription)
    assert replayed.id == second


async def test_only_ephemeral_types_are_signalled(broker: Broker) -> None:
    with pytest.raises(ValueError, match="ephemeral"):
        await broker.signal(fresh_channel(), event(1))
    with pytest.raises(ValidationError):
        await broker.signal(
            fresh_channel(), envelope("typing", {"session_name": "s1", "who": "agent"}, "ai_chatbot")
        )


async def test_forged_ephemeral_messages_are_dropped(redis_broker: RedisBroker, redis: Redis) -> None:
    """Only a well-formed ``typing`` travels without an id: any other event sent so is dropped."""
    channel = fresh_channel()
    async with redis_broker.subscribe(channel) as subscription:
        await publish_raw(redis, channel, "~ " + encode(event(1)))
        await publish_raw(redis, channel, "~ not json")
        await publish_raw(redis, channel, "~ " + encode(typing_event()))
        [typing] = await take(subscription, 1)
        await assert_quiet(subscription)
    assert typing.envelope["type"] == "typing"
    assert redis_broker.stats.malformed == 2
