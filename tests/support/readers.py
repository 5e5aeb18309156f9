"""Stream readers that run beside a test: a ``Collector`` that keeps every event of one open
stream as it arrives, and a ``ReconnectingReader`` that reads a URL the way EventSource does,
across the server going away and coming back."""

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import aiohttp

from tests.support.sse import AMBIENT, SSEEvent, SSEStream
from tests.support.wait import until_signalled


def messages_in(events: list[SSEEvent]) -> list[dict[str, Any]]:
    """The messages of the ``new_message`` events, in order."""
    return [event.payload["message"] for event in events if event.type == "new_message"]


class Collector:
    """Reads every event of an open SSE stream in a background task, so that heartbeats and
    events are seen as they arrive, and records whether (and how) the stream ended."""

    def __init__(self, name: str, stream: SSEStream, connected: SSEEvent, limit: int = 5000) -> None:
        self.name = name
        self.stream = stream
        self.events: list[SSEEvent] = [connected]
        self.ended: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(limit), name=f"collector-{name}")

    async def _read(self, limit: int) -> None:
        try:
            for _ in range(limit):
                self.events.append(await self.stream.next(timeout=60))
                self._changed.set()
            self.ended = AssertionError(f"read limit of {limit} events reached")
        except Exception as exc:  # EOFError (the end), a broken body, a timeout
            self.ended = exc
        finally:
            self._changed.set()

    @property
    def heartbeats(self) -> int:
        return sum(event.type == "heartbeat" for event in self.events)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return messages_in(self.events)

    async def wait_until(self, predicate: Callable[[list[SSEEvent]], bool], timeout: float) -> bool:
        """Whether ``predicate(events)`` comes to hold within ``timeout`` (bounded)."""
        await until_signalled(
            lambda: predicate(self.events),
            self._changed,
            timeout=timeout,
            stop=lambda: self.ended is not None,
        )
        return predicate(self.events)

    async def close(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


class ReconnectingReader:
    """Reads a stream the way EventSource does: after EOF or a connection error it waits the
    last ``retry:`` hint and reconnects with ``Last-Event-ID``. Bounded in attempts; a read
    silent for ``read_timeout`` counts as a dead connection (the server sends heartbeats)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        max_attempts: int = 20,
        read_timeout: float = 5.0,
        retry_ms: int = 300,
    ) -> None:
        self.http = http
        self.url = url
        self.max_attempts = max_attempts
        self.read_timeout = read_timeout
        self.retry_ms = retry_ms
        self.last_event_id: str | None = None
        self.events: list[SSEEvent] = []
        self.connected: list[tuple[str | None, SSEEvent]] = []  # (id sent, connected event)
        self.endings: list[str] = []
        self.hints: list[int] = []
        self.per_connection: list[int] = []  # events read on each connection

    async def run(self) -> None:
        """Read until cancelled; fails after ``max_attempts`` connections."""
        for _ in range(self.max_attempts):
            sent = self.last_event_id
            headers = {"Last-Event-ID": sent} if sent is not None else None
            stream: SSEStream | None = None
            before = len(self.events)
            try:
                async with self.http.get(
                    self.url,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=2),
                ) as response:
                    # EventSource gives up for good on anything but a 200 event stream.
                    assert response.status == 200, (response.status, await response.text())
                    stream = SSEStream(response, sent)
                    while True:
                        event = await stream.next(self.read_timeout)
                        self.last_event_id = stream.last_event_id
                        if event.type == "connected":
                            self.connected.append((sent, event))
                        elif event.type not in AMBIENT:
                            self.events.append(event)
            except EOFError:
                self.endings.append("eof")
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                self.endings.append(type(exc).__name__)
            if stream is not None:
                self.per_connection.append(len(self.events) - before)
            if stream is not None and stream.retry_ms is not None:
                self.retry_ms = stream.retry_ms
                self.hints.append(stream.retry_ms)
            await asyncio.sleep(self.retry_ms / 1000)
        raise AssertionError(f"gave up after {self.max_attempts} connections: {self.endings}")

    def messages(self) -> list[dict[str, Any]]:
        return [e.payload["message"] for e in self.events if e.type == "new_message"]
