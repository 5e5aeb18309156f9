"""The publishing side of the load generator (runs in its own process): creates the sessions,
takes each over once, and publishes agent messages through the public endpoints, at a fixed
rate or as fast as it can. Each message's content is ``t=<send time> n=<sequence number>``;
number n goes to session (n - base) mod len(sessions)."""

import asyncio
import gc
import itertools
import logging
import time
from collections import Counter
from typing import Any

import aiohttp
import numpy

logger = logging.getLogger(__name__)

AGENT = "bench-agent"
REQUEST_TIMEOUT = 10.0
SETUP_CONCURRENCY = 32
FIXED_RATE_IN_FLIGHT = 256  # open-loop sends still waiting for an answer, at most
JSON = {"Content-Type": "application/json"}


class Publisher:
    """Commands (``do_*``) sent by the harness through bench.workers."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            )
        return self._http

    async def _post(self, url: str, body: dict[str, Any] | bytes) -> int | str:
        """POST JSON (``body`` already encoded, or to encode); the status, or the name of the
        error."""
        encoded = isinstance(body, bytes)
        try:
            async with self.http().post(
                url,
                data=body if encoded else None,
                json=None if encoded else body,
                headers=JSON if encoded else None,
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    async def do_setup(self, base_url: str, sessions: list[str]) -> dict[str, Any]:
        """Create every session, then take each over as the benchmark's agent."""
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)
        errors: Counter[str] = Counter()

        async def prepare(name: str) -> None:
            async with gate:
                created = await self._post(f"{base_url}/chatbot/api/sessions", {"session_name": name})
                taken = await self._post(
                    f"{base_url}/workbench/api/sessions/{name}/takeover", {"agent_id": AGENT}
                )
            if created != 201:
                errors[f"create: {created}"] += 1
            if taken != 200:
                errors[f"takeover: {taken}"] += 1

        started = time.monotonic()
        await asyncio.gather(*(prepare(name) for name in sessions))
        return {"seconds": time.monotonic() - started, "errors": dict(errors)}

    async def do_publish(
        self,
        base_url: str,
        sessions: list[str],
        base: int,
        duration: float,
        rate: float | None,
        concurrency: int,
        feed: str | None = None,
    ) -> dict[str, Any]:
        """Publish for ``duration`` seconds: ``rate`` messages/s in all (open loop), or, with no
        rate, from ``concurrency`` tasks each sending as soon as its last answer came. The
        garbage collector is off meanwhile: a pause between stamping and sending would count
        as the server's latency. ``feed="nchan"``: the same messages, as nchan takes them."""
        run = _run_class(feed)(self, base_url, sessions, base)
        gc.collect()
        gc.disable()
        try:
            if rate is None:
                await run.at_max_rate(duration, concurrency)
            else:
                await run.at_fixed_rate(duration, rate)
        finally:
            gc.enable()
        return run.summary()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _run_class(feed: str | None) -> "type[PublishRun]":
    if feed == "nchan":
        from bench.nchan import NchanPublishRun  # it builds on this module

        return NchanPublishRun
    return PublishRun


class PublishRun:
    """One scenario's publishing, and what came of it."""

    accepted: frozenset[int | str] = frozenset({200})  # the statuses of a message published

    def __init__(self, publisher: Publisher, base_url: str, sessions: list[str], base: int) -> None:
        self.publisher = publisher
        self.sessions = sessions
        self.urls = [f"{base_url}/workbench/api/sessions/{name}/messages" for name in sessions]
        self.base = base
        self.ok: list[int] = []
        self.attempted = 0
        self.errors: Counter[str] = Counter()
        self.request_seconds: list[float] = []
        self.start = self.end = 0.0

    async def send(self, seq: int) -> None:
        """Publish message number ``seq``; its content carries the moment it is sent."""
        self.attempted += 1
        url = self.urls[(seq - self.base) % len(self.urls)]
        sent = time.time()
        status = await self.publisher._post(url, self.body(seq, sent))
        self.end = time.time()
        self.request_seconds.append(self.end - sent)
        if status in self.accepted:
            self.ok.append(seq)
        else:
            self.errors[str(status)] += 1

    @staticmethod
    def content(seq: int, sent: float) -> str:
        return f"t={sent:.6f} n={seq}"

    def body(self, seq: int, sent: float) -> dict[str, Any] | bytes:
        """What is posted for message number ``seq``."""
        return {"agent_id": AGENT, "content": self.content(seq, sent)}

    async def at_fixed_rate(self, duration: float, rate: float) -> None:
        total = max(1, round(rate * duration))
        in_flight = asyncio.Semaphore(FIXED_RATE_IN_FLIGHT)
        tasks = []
        self.start = time.time()
        t0 = time.monotonic()
        for i in range(total):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await in_flight.acquire()
            task = asyncio.create_task(self.send(self.base + i))
            task.add_done_callback(lambda _: in_flight.release())
            tasks.append(task)
        await asyncio.gather(*tasks)

    async def at_max_rate(self, duration: float, concurrency: int) -> None:
        numbers = itertools.count(self.base)
        self.start = time.time()
        deadline = time.monotonic() + duration

        async def loop() -> None:
            while time.monotonic() < deadline:
                await self.send(next(numbers))

        await asyncio.gather(*(loop() for _ in range(concurrency)))

    def summary(self) -> dict[str, Any]:
        seconds = numpy.array(self.request_seconds) if self.request_seconds else numpy.zeros(1)
        return {
            "ok": self.ok,
            "attempted": self.attempted,
            "errors": dict(self.errors),
            "start": self.start,
            "end": self.end,
            "request_p50": float(numpy.percentile(seconds, 50)),
            "request_p99": float(numpy.percentile(seconds, 99)),
        }
