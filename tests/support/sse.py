"""The suite's SSE client: it reads the wire format itself (``id:``, ``event:``, ``data:``,
``retry:`` and comment lines), so the tests see exactly what a browser's EventSource would, and
keeps what EventSource keeps (the last event id, the reconnection time).

One parser, ``read_frame``; ``SSEStream`` reads the JSON event streams with it, and the chat
stream's named frames are read with it too (``read_frames``)."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

DEFAULT_TIMEOUT = 5.0
DRAIN_LIMIT = 1000  # events a drain reads at most before it calls the stream endless


@dataclass(frozen=True)
class Frame:
    """The fields of one frame, up to its blank line (``retry`` only when it is a number)."""

    id: str | None
    event: str | None
    lines: tuple[str, ...]  # the data lines
    retry: int | None
    comments: tuple[str, ...]

    @property
    def data(self) -> Any:
        """The data lines, joined and read as JSON."""
        return json.loads("\n".join(self.lines))


class StreamEnded(EOFError):
    """The server ended the stream; ``pending`` holds the data lines of a frame it cut short."""

    def __init__(self, pending: list[str]) -> None:
        super().__init__("stream ended")
        self.pending = pending


async def read_frame(content: aiohttp.StreamReader) -> Frame:
    """The next frame of ``content``; StreamEnded at the end of the body."""
    fields: dict[str, str] = {}
    data: list[str] = []
    comments: list[str] = []
    retry: int | None = None
    while True:
        raw = await content.readline()
        if not raw:
            raise StreamEnded(data)
        line = raw.decode().rstrip("\r\n")
        if not line:
            if fields or data or comments or retry is not None:
                return Frame(fields.get("id"), fields.get("event"), tuple(data), retry, tuple(comments))
            continue
        if line.startswith(":"):
            comments.append(line)
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "retry":
            if value.isascii() and value.isdigit():
                retry = int(value)
        else:
            fields[name] = value


async def read_frames(response: aiohttp.ClientResponse, timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
    """Every frame with data until the server ends the stream (bounded by ``timeout``); a
    stream that ends inside a frame fails."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                frame = await read_frame(response.content)
            except StreamEnded as end:
                assert not end.pending, f"stream ended inside a frame: {end.pending}"
                return frames
            if frame.lines:
                frames.append(frame)


# Events without an id that may come between any two others (docs/api.md): a test that counts
# a stream's events leaves them out, and asks for them by type when it wants them.
AMBIENT = frozenset({"heartbeat", "typing", "queue_update"})


@dataclass
class SSEEvent:
    id: str | None
    data: dict[str, Any]

    @property
    def type(self) -> str:
        result: str = self.data["type"]
        return result

    @property
    def payload(self) -> dict[str, Any]:
        result: dict[str, Any] = self.data["payload"]
        return result


class SSEStream:
    """An open event stream of JSON envelopes. Besides the events it keeps the comments, the
    last ``retry:`` hint and the last event id (which a frame without ``id:`` leaves as it
    was), and the order of events and hints on the wire (``trail``)."""

    def __init__(self, response: aiohttp.ClientResponse, last_event_id: str | None = None) -> None:
        self.response = response
        self.comments: list[str] = []
        self.retry_ms: int | None = None
        self.retries: list[int] = []
        self.last_event_id = last_event_id
        self.trail: list[str] = []

    async def next(self, timeout: float = DEFAULT_TIMEOUT) -> SSEEvent:
        """The next event; raises TimeoutError if none arrives in time, EOFError at the end."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await read_frame(self.response.content)
                self.comments.extend(frame.comments)
                if frame.id is not None:
                    self.last_event_id = frame.id
                if frame.retry is not None:
                    self.retry_ms = frame.retry
                    self.retries.append(frame.retry)
                    self.trail.append(f"retry {frame.retry}")
                if frame.lines:
                    self.trail.append(f"event {frame.id}")
                    return SSEEvent(frame.id, frame.data)

    async def next_of(self, *types: str, timeout: float = DEFAULT_TIMEOUT) -> SSEEvent:
        """The next event of one of ``types``, skipping heartbeats and others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event.type in types:
                    return event

    async def take(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[SSEEvent]:
        """The next ``count`` events that are not AMBIENT; a stream that ends first fails with
        how far it got."""
        events: list[SSEEvent] = []
        try:
            async with asyncio.timeout(timeout):
                while len(events) < count:
                    event = await self.next(timeout)
                    if event.type not in AMBIENT:
                        events.append(event)
        except EOFError:
            raise AssertionError(
                f"the server ended the stream after {len(events)} of {count} events"
            ) from None
        return events

    async def assert_quiet(self, seconds: float = 0.3) -> None:
        """Nothing but AMBIENT events arrives for ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    event = await self.next(seconds + 1)
                    assert event.type in AMBIENT, f"unexpected event {event}"
        except TimeoutError:
            pass

    async def drain(
        self,
        quiet: float,
        *,
        limit: int = DRAIN_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        ambient: bool = False,
    ) -> list[SSEEvent]:
        """Every event but the AMBIENT ones (with ``ambient``, those too: a test of typing or
        heartbeats) until the stream stays quiet for ``quiet`` seconds: at most ``limit``
        events, within ``timeout``."""
        events: list[SSEEvent] = []
        async with asyncio.timeout(timeout):
            for _ in range(limit + 1):
                try:
                    event = await self.next(quiet)
                except TimeoutError:
                    return events
                if ambient or event.type not in AMBIENT:
                    events.append(event)
        raise AssertionError(f"more than {limit} events: {events[-3:]}")

    async def read_to_end(self, limit: int = 100, timeout: float = 9.0) -> list[SSEEvent]:
        """Every event until the server ends the stream; fails if it does not end in time."""
        events: list[SSEEvent] = []
        async with asyncio.timeout(timeout):
            for _ in range(limit):
                try:
                    events.append(await self.next(timeout))
                except EOFError:
                    return events
        raise AssertionError(f"stream did not end after {limit} events: {events}")


def check_opened(response: aiohttp.ClientResponse, connected: SSEEvent) -> None:
    assert response.headers["Content-Type"].startswith("text/event-stream"), response.headers
    assert connected.type == "connected", connected


async def connect(
    http: Any,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[SSEStream, SSEEvent]:
    """A stream held open until its ``response`` is closed (by the caller), and its
    ``connected`` event; for many streams at once, where context managers do not fit."""
    response = await http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None))
    try:
        assert response.status == 200, (url, response.status, await response.text())
        stream = SSEStream(response)
        connected = await stream.next(timeout)
        check_opened(response, connected)
    except BaseException:
        response.close()
        raise
    return stream, connected


@asynccontextmanager
async def open_stream(
    http: Any, url: str, *, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[SSEStream, SSEEvent]]:
    """Open an SSE stream with ``http.get`` (aiohttp ClientSession or TestClient); yields the
    stream and its ``connected`` event, which must come first."""
    async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as response:
        assert response.status == 200, await response.text()
        stream = SSEStream(response, headers.get("Last-Event-ID") if headers else None)
        connected = await stream.next()
        check_opened(response, connected)
        yield stream, connected


@asynccontextmanager
async def open_streams(http: Any, *urls: str) -> AsyncIterator[list[SSEStream]]:
    """Open every stream in ``urls`` (each has seen ``connected``); close them all at the end."""
    async with AsyncExitStack() as stack:
        yield [(await stack.enter_async_context(open_stream(http, url)))[0] for url in urls]
