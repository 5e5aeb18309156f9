"""Bounded waiting: the one way the suite waits for something to come true.

Every loop here is bounded twice, in time (a deadline) and in count (deadline / interval
rounds), so a wait can neither hang a test nor spin. ``poll`` never fails and says what it saw;
``until`` fails the test with the last value; ``wait_for`` returns the last value for the
caller's own assertion. The ``*_sync`` forms are for harness code that runs in a thread."""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, overload

T = TypeVar("T")

# ``fetch`` is a coroutine function or a plain function: each public wait below is overloaded
# on the two, since from their union mypy cannot tell which of them ``T`` is the result of.
Fetch = Callable[[], Awaitable[T]] | Callable[[], T]

INTERVAL = 0.05


@dataclass(frozen=True)
class Polled(Generic[T]):
    """What a poll saw: the last value (None if no fetch completed), whether ``done`` held for
    it, and the seconds the poll took."""

    value: T | None
    ok: bool
    elapsed: float


def _rounds(timeout: float, interval: float) -> int:
    return int(timeout / interval) + 2


@overload
async def poll(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = ...,
    *,
    timeout: float,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> Polled[T]: ...
@overload
async def poll(
    fetch: Callable[[], T],
    done: Callable[[T], object] = ...,
    *,
    timeout: float,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> Polled[T]: ...
async def poll(
    fetch: Fetch[T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> Polled[T]:
    """Call ``fetch`` (sync or async) until ``done(value)`` holds; exceptions in ``ignore``
    count as a round without a value. Each fetch is cut off at the deadline."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    value: T | None = None
    for _ in range(_rounds(timeout, interval)):
        try:
            async with asyncio.timeout_at(deadline):
                result = fetch()
                current: T = await result if inspect.isawaitable(result) else result
        except TimeoutError:
            break
        except ignore:
            pass
        else:
            value = current
            if done(current):
                return Polled(current, True, loop.time() - started)
        if loop.time() >= deadline:
            break
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
    return Polled(value, False, loop.time() - started)


@overload
async def until(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = ...,
    *,
    timeout: float,
    what: str = ...,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
    describe: Callable[[T | None], object] = ...,
) -> T: ...
@overload
async def until(
    fetch: Callable[[], T],
    done: Callable[[T], object] = ...,
    *,
    timeout: float,
    what: str = ...,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
    describe: Callable[[T | None], object] = ...,
) -> T: ...
async def until(
    fetch: Fetch[T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float,
    what: str = "the condition",
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
    describe: Callable[[T | None], object] = repr,
) -> T:
    """``poll``, failing the test (AssertionError naming ``what`` and the last value) when
    ``done`` does not come to hold in time; the value it held for."""
    polled = await poll(fetch, done, timeout=timeout, interval=interval, ignore=ignore)
    if not polled.ok:
        raise AssertionError(f"{what}: not so within {timeout} s; last: {describe(polled.value)}")
    return cast(T, polled.value)  # ok: the value ``done`` held for


@overload
async def eventually(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = ...,
    *,
    timeout: float,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T | None: ...
@overload
async def eventually(
    fetch: Callable[[], T],
    done: Callable[[T], object] = ...,
    *,
    timeout: float,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T | None: ...
async def eventually(
    fetch: Fetch[T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> T | None:
    """``poll``'s last value (the one ``done`` held for, if it did), for the caller's assert."""
    return (await poll(fetch, done, timeout=timeout, interval=interval, ignore=ignore)).value


@overload
async def wait_for(
    fetch: Callable[[], Awaitable[T]],
    expected: Any,
    *,
    timeout: float,
    interval: float = ...,
) -> T | None: ...
@overload
async def wait_for(
    fetch: Callable[[], T],
    expected: Any,
    *,
    timeout: float,
    interval: float = ...,
) -> T | None: ...
async def wait_for(
    fetch: Fetch[T],
    expected: Any,
    *,
    timeout: float,
    interval: float = INTERVAL,
) -> T | None:
    """Poll until ``fetch()`` returns ``expected``; the last value, for the caller's assert."""
    return await eventually(fetch, lambda value: value == expected, timeout=timeout, interval=interval)


async def until_signalled(
    check: Callable[[], T],
    changed: asyncio.Event,
    *,
    timeout: float,
    stop: Callable[[], bool] = lambda: False,
    max_rounds: int = 100_000,
) -> T | None:
    """Re-check ``check`` each time ``changed`` is set (by whoever feeds it new data) until it
    returns something true, ``stop()`` holds, or ``timeout`` passes; the last result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    result = None
    for _ in range(max_rounds):
        changed.clear()
        result = check()
        if result or stop():
            return result
        left = deadline - loop.time()
        if left <= 0:
            return result
        try:
            async with asyncio.timeout(left):
                await changed.wait()
        except TimeoutError:
            return check()
    return result


def poll_sync(
    fetch: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float,
    interval: float = INTERVAL,
) -> Polled[T]:
    """``poll`` for a thread: blocking sleeps; ``fetch`` may raise to end the wait at once."""
    started = time.monotonic()
    deadline = started + timeout
    value: T | None = None
    for _ in range(_rounds(timeout, interval)):
        value = fetch()
        if done(value):
            return Polled(value, True, time.monotonic() - started)
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return Polled(value, False, time.monotonic() - started)


def until_sync(
    fetch: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float,
    what: str,
    interval: float = INTERVAL,
) -> T:
    """``poll_sync``, raising RuntimeError (``what`` within ``timeout``) if it never holds."""
    polled = poll_sync(fetch, done, timeout=timeout, interval=interval)
    if not polled.ok:
        raise RuntimeError(f"{what} within {timeout}s")
    return cast(T, polled.value)  # ok: the value ``done`` held for


async def gather_in_batches(
    factories: list[Callable[[], Awaitable[T]]], batch: int, timeout: float
) -> list[T]:
    """Run the coroutines ``batch`` at a time, each batch bounded by ``timeout``."""
    results: list[T] = []
    for start in range(0, len(factories), batch):
        async with asyncio.timeout(timeout):
            results.extend(await asyncio.gather(*(make() for make in factories[start : start + batch])))
    return results
