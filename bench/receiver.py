"""The receiving side of the load generator (runs in its own process): opens SSE streams,
records what each one gets, and reports latency, deliveries, missing and duplicate events."""

import asyncio
import contextlib
import gc
import logging
import time
from array import array
from collections import Counter
from typing import Any

from bench.sse_client import Recorder, SseProtocol, StreamState, request_bytes

logger = logging.getLogger(__name__)

OPEN_CONCURRENCY = 100  # streams being opened at once (keeps the listen backlog from overflowing)
POLL = 0.02


class Receiver:
    """Commands (``do_*``) sent by the harness through bench.workers."""

    def __init__(self) -> None:
        self.streams: list[StreamState] = []
        self.transports: list[asyncio.Transport] = []
        self.recorder = Recorder()

    async def do_open(
        self,
        host: str,
        port: int,
        paths: list[str],
        sessions: list[int],
        timeout: float,
        at_once: int = OPEN_CONCURRENCY,
    ) -> dict[str, Any]:
        """Open one stream per path (stream i belongs to session ``sessions[i]``), at most
        ``at_once`` at a time, each counted open once its ``connected`` event arrived; give up
        after ``timeout`` seconds overall."""
        started = time.monotonic()
        deadline = started + timeout
        gate = asyncio.Semaphore(at_once)
        errors: Counter[str] = Counter()

        async def open_one(path: str, session: int) -> None:
            async with gate:
                error = await self._open_stream(host, port, path, session, deadline)
            if error is not None:
                errors[error] += 1

        await asyncio.gather(*(open_one(p, s) for p, s in zip(paths, sessions, strict=True)))
        opened = sum(1 for s in self.streams if s.error is None and not s.closed)
        return {"opened": opened, "seconds": time.monotonic() - started, "errors": dict(errors)}

    async def _open_stream(
        self, host: str, port: int, path: str, session: int, deadline: float
    ) -> str | None:
        """Open one stream; None once it is live, else why not."""
        loop = asyncio.get_running_loop()
        stream = StreamState(session, loop.create_future())
        self.streams.append(stream)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stream.fail("open timeout")
            return stream.error
        request = request_bytes(host, port, path)
        transport: asyncio.Transport | None = None
        try:
            async with asyncio.timeout(remaining):
                transport, _ = await loop.create_connection(
                    lambda: SseProtocol(request, stream, self.recorder), host, port
                )
                self.transports.append(transport)
                await stream.ready
        except TimeoutError:
            stream.fail("open timeout")
        except OSError as exc:  # refused, reset, or a non-200 answer (see StreamState.fail)
            stream.fail(type(exc).__name__)
        else:
            return None
        if transport is not None:
            transport.abort()
        return stream.error

    async def do_begin(self, base: int) -> None:
        """A scenario starts: its sequence numbers begin at ``base``. The garbage collector
        stays off until the scenario is collected, so that none of its pauses counts as latency."""
        for stream in self.streams:
            stream.seen = set()
            stream.duplicates = 0
        self.recorder.reset(base)
        gc.collect()
        gc.freeze()
        gc.disable()

    async def do_collect(
        self,
        base: int,
        published: list[int],
        sessions: int,
        drain: float,
        quiet: float,
        routes: bytes | None = None,
    ) -> dict[str, Any]:
        """Wait until every stream has every published message (or ``drain`` seconds pass, or
        nothing arrives for ``quiet`` seconds), then count what arrived and what did not.
        ``routes`` (int64 pairs: sequence number, session index), when given, replaces the
        round-robin rule of ``_expected``: a message may be due on several channels, which
        the contact-center scenario (bench.contact_center) needs."""
        if routes is None:
            expected = self._expected(base, published, sessions)
        else:
            expected = self._routed(routes, sessions)
        live = [s for s in self.streams if s.error is None]
        target = sum(len(expected[s.session]) for s in live)
        try:
            complete = await self._wait_for(live, expected, target, drain, quiet)
        finally:
            gc.enable()
        return {**self._summary(live, expected, target), "ended": complete}

    @staticmethod
    def _expected(base: int, published: list[int], sessions: int) -> list[set[int]]:
        """Sequence numbers each session's streams should get (the publisher sends number n to
        session (n - base) mod sessions)."""
        expected: list[set[int]] = [set() for _ in range(sessions)]
        for seq in published:
            expected[(seq - base) % sessions].add(seq)
        return expected

    @staticmethod
    def _routed(routes: bytes, sessions: int) -> list[set[int]]:
        """Sequence numbers each session index's streams should get, pair by pair."""
        pairs = array("q")
        pairs.frombytes(routes)
        expected: list[set[int]] = [set() for _ in range(sessions)]
        for seq, session in zip(pairs[0::2], pairs[1::2], strict=True):
            expected[session].add(seq)
        return expected

    async def _wait_for(
        self, live: list[StreamState], expected: list[set[int]], target: int, drain: float, quiet: float
    ) -> str:
        """How the wait ended: "complete", "quiet" (nothing more came) or "deadline" (events
        were still arriving: the missing ones are late rather than lost)."""
        deadline = time.monotonic() + drain
        last_count, last_change, checked = -1, time.monotonic(), -1
        while time.monotonic() < deadline:
            count = self.recorder.deliveries
            # Enough deliveries may still hide a gap (a publish that timed out on our side but
            # reached the streams counts too): then look at every stream, once per new count.
            if count >= target and count != checked:
                checked = count
                if not _missing(live, expected):
                    return "complete"
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change > quiet:
                return "quiet"
            await asyncio.sleep(POLL)
        return "deadline"

    def _summary(self, live: list[StreamState], expected: list[set[int]], target: int) -> dict[str, Any]:
        recorder = self.recorder
        return {
            "expected": target,
            "deliveries": recorder.deliveries,
            "missing": _missing(live, expected),
            "unexpected": sum(len(s.seen - expected[s.session]) for s in live),
            "duplicates": recorder.duplicates,
            "stale": recorder.stale,
            "cut": sum(1 for s in live if s.closed),
            "first": recorder.first,
            "last": recorder.last,
            "latencies": recorder.latencies.tobytes(),
        }

    async def close(self) -> None:
        """Close every stream."""
        for transport in self.transports:
            with contextlib.suppress(Exception):
                transport.abort()
        self.transports.clear()
        await asyncio.sleep(0)


def _missing(live: list[StreamState], expected: list[set[int]]) -> int:
    """Expected messages some open stream has not received."""
    return sum(len(expected[s.session] - s.seen) for s in live)
