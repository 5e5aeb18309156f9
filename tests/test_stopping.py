"""Stopping the app's background jobs (app.process.rounds.stop): a job whose cancellation is
lost on its way, as Python 3.11's ``asyncio.wait_for`` (in redis-py's connect) loses one that
lands as the call it waits on completes, is cancelled again, so the app's stop still ends; one
that will not stop at all is given up on after a bounded wait, and said so."""

import asyncio
import logging
import time

import pytest

from app.process.rounds import STOP_ATTEMPTS, STOP_WAIT, stop


async def test_a_job_that_lost_its_cancellation_is_stopped_all_the_same(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancellations = 0

    async def job() -> None:
        nonlocal cancellations
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations > 1:
                    raise
                # The first is lost, as wait_for loses it: the job's loop goes on.

    task = asyncio.create_task(job(), name="stubborn")
    await asyncio.sleep(0)
    started = time.monotonic()
    await stop(task)
    assert task.cancelled() and cancellations == 2
    assert time.monotonic() - started < 2 * STOP_WAIT + 1.0
    assert "stubborn did not stop when cancelled: cancelling it again" in caplog.text


async def test_a_job_that_ends_by_itself_or_fails_is_stopped_at_once() -> None:
    async def quick() -> None:
        return None

    async def failing() -> None:
        raise RuntimeError("a job's own failure")

    done = asyncio.create_task(quick())
    await done
    await stop(done)  # already done: nothing to wait on
    failed = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="a job's own failure"):
        await stop(failed)  # its failure is not hidden by the stop


async def test_a_job_that_will_not_stop_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf(), name="deaf")
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await stop(task)
    assert time.monotonic() - started < STOP_ATTEMPTS * STOP_WAIT + 1.0
    assert not task.done()
    assert f"deaf did not stop after {STOP_ATTEMPTS} cancellations" in caplog.text
    release.set()  # the test's own end: let it finish
    task.cancel()
    await asyncio.wait((task,), timeout=1.0)
    assert task.done()
