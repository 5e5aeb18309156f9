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

    async def do_setup(
        self,
        base_url: str,
        sessions: list[str],
        agents: list[str] | None = None,
        at_once: int = SETUP_CONCURRENCY,
    ) -> dict[str, Any]:
        """Create every session, then take each over as the benchmark's agent (or, with
        ``agents``, session i as agents[i]), ``at_once`` sessions at a time."""
        gate = asyncio.Semaphore(at_once)
        errors: Counter[str] = Counter()

        async def prepare(name: str, agent: str) -> None:
            async with gate:
                created = await self._post(f"{base_url}/chatbot/api/sessions", {"session_name": name})
                taken = await self._post(
                    f"{base_url}/workbench/api/sessions/{name}/takeover", {"agent_id": agent}
                )
            if created != 201:
                errors[f"create: {created}"] += 1
            if taken != 200:
                errors[f"takeover: {taken}"] += 1

        started = time.monotonic()
        holders = agents if agents is not None else [AGENT] * len(sessions)
        await asyncio.gather(*(prepare(name, agent) for name, agent in zip(sessions, holders, strict=True)))
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

    async def do_poisson(
        self,
        base_url: str,
        sessions: list[str],
        agents: list[str],
        warm_base: int,
        base: int,
        rate: float,
        warmup: float,
        seconds: float,
        seed: int,
        in_flight: int,
        give_up: float,
    ) -> dict[str, Any]:
        """The contact-center load (bench.contact_center): ``rate`` messages/s for ``warmup``
        then ``seconds`` seconds, open loop, half from customers and half from the agents
        holding the sessions (session i held by agents[i]); sends more than ``give_up``
        seconds late are dropped (counted as errors). The garbage collector is off
        meanwhile, as in do_publish."""
        run = PoissonRun(self, base_url, sessions, agents)
        run.schedule(warm_base, base, rate, warmup, seconds, seed)
        gc.collect()
        gc.disable()
        try:
            await run.send_all(in_flight, give_up)
        finally:
            gc.enable()
        return run.summary(warmup, seconds)

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


CUSTOMER, AGENT_KIND = 0, 1  # who sends a contact-center message
POISSON_LEAD = 0.05  # seconds between scheduling and the first send time


class PoissonRun:
    """One step of the contact-center load. Every send time is drawn before the first send,
    and each message carries its scheduled time, not the moment it left: a publisher that
    falls behind (a busy core, its in-flight cap reached) then adds to the measured latency
    instead of quietly lowering the rate it offers.

    The gaps are exponential, rescaled so that each phase (warm-up, measured window) holds
    exactly round(rate × duration) messages: a Poisson process conditioned on its count,
    so that a step's achieved rate compares with its nominal one without sampling noise."""

    def __init__(self, publisher: Publisher, base_url: str, sessions: list[str], agents: list[str]) -> None:
        self.publisher = publisher
        self.chat_url = f"{base_url}/chatbot/api/chat"
        self.agent_urls = [f"{base_url}/workbench/api/sessions/{name}/messages" for name in sessions]
        self.sessions = sessions
        self.agents = agents
        self.errors: Counter[str] = Counter()
        self.warm = 0
        self.start = 0.0  # wall clock of offset 0
        self.offsets = numpy.zeros(0)
        self.conversations = numpy.zeros(0, dtype=numpy.int64)
        self.kinds = numpy.zeros(0, dtype=numpy.int64)
        self.seqs = numpy.zeros(0, dtype=numpy.int64)
        self.scheduled = numpy.zeros(0)  # wall-clock send times
        self.sent = numpy.zeros(0)  # when each request actually left (NaN: never)
        self.answered = numpy.zeros(0)  # when its answer came (NaN: never)
        self.ok = numpy.zeros(0, dtype=bool)

    def schedule(
        self, warm_base: int, base: int, rate: float, warmup: float, seconds: float, seed: int
    ) -> None:
        """Draw the send times (offsets from the start), conversations and senders; warm-up
        messages are numbered from ``warm_base``, measured ones from ``base``."""
        rng = numpy.random.default_rng(seed)

        def arrivals(count: int, span: float) -> numpy.ndarray:
            gaps = rng.exponential(1.0, count + 1)
            times: numpy.ndarray = numpy.cumsum(gaps)[:count] / gaps.sum() * span
            return times

        self.warm = round(rate * warmup)
        measured = max(1, round(rate * seconds))
        self.offsets = numpy.concatenate([arrivals(self.warm, warmup), warmup + arrivals(measured, seconds)])
        total = self.offsets.size
        self.conversations = rng.integers(0, len(self.sessions), total)
        self.kinds = rng.integers(0, 2, total)
        self.seqs = numpy.concatenate(
            [numpy.arange(warm_base, warm_base + self.warm), numpy.arange(base, base + measured)]
        )
        self.scheduled = numpy.zeros(total)  # set when sending starts
        self.sent = numpy.full(total, numpy.nan)
        self.answered = numpy.full(total, numpy.nan)
        self.ok = numpy.zeros(total, dtype=bool)

    async def send(self, i: int) -> None:
        """Message i, from the customer or the holding agent of its conversation."""
        conversation = int(self.conversations[i])
        content = f"t={self.scheduled[i]:.6f} n={self.seqs[i]}"
        self.sent[i] = time.time()
        if self.kinds[i] == CUSTOMER:
            body = {"session_name": self.sessions[conversation], "content": content}
            status = await self.publisher._post(self.chat_url, body)
        else:
            body = {"agent_id": self.agents[conversation], "content": content}
            status = await self.publisher._post(self.agent_urls[conversation], body)
        self.answered[i] = time.time()
        if status == 200:
            self.ok[i] = True
        else:
            self.errors[str(status)] += 1

    async def send_all(self, in_flight: int, give_up: float) -> None:
        """Send each message at its time; at most ``in_flight`` wait for their answer (each
        bounded by REQUEST_TIMEOUT), and a send past that cap leaves late; once ``give_up``
        seconds late, the rest is not sent (which bounds a step's time)."""
        gate = asyncio.Semaphore(in_flight)
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic() + POISSON_LEAD
        self.start = time.time() + POISSON_LEAD
        self.scheduled = self.start + self.offsets
        for i, offset in enumerate(self.offsets.tolist()):
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > give_up:
                self.errors["not sent: publisher too late"] += self.offsets.size - i
                break
            await gate.acquire()
            task = asyncio.create_task(self.send(i))
            task.add_done_callback(lambda _: gate.release())
            tasks.append(task)
        await asyncio.gather(*tasks)

    def summary(self, warmup: float, seconds: float) -> dict[str, Any]:
        """What the harness needs: the measured messages that succeeded (to know what every
        stream should get), errors, how late the sends left, and the rate achieved."""
        measured = numpy.arange(self.offsets.size) >= self.warm
        done = measured & self.ok
        window_start = self.start + warmup
        answered = self.answered[measured]
        last = float(numpy.nanmax(answered)) if numpy.isfinite(answered).any() else window_start
        lag = (self.sent - self.scheduled)[measured]
        lag = lag[numpy.isfinite(lag)]
        request = (self.answered - self.sent)[measured]
        request = request[numpy.isfinite(request)]
        return {
            "seq": self.seqs[done].astype(numpy.int64).tobytes(),
            "conversation": self.conversations[done].astype(numpy.int64).tobytes(),
            "kind": self.kinds[done].astype(numpy.int64).tobytes(),
            "attempted": int(measured.sum()),
            "warmup_attempted": self.warm,
            "ok": int(done.sum()),
            "errors": dict(self.errors),
            "start": window_start,
            "achieved": float(done.sum()) / max(seconds, last - window_start),
            "lag_p50": _percentile(lag, 50),
            "lag_p99": _percentile(lag, 99),
            "lag_max": float(lag.max()) if lag.size else 0.0,
            "request_p50": _percentile(request, 50),
            "request_p99": _percentile(request, 99),
        }


def _percentile(values: numpy.ndarray, q: float) -> float:
    return float(numpy.percentile(values, q)) if values.size else 0.0
