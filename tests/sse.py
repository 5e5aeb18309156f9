"""A small SSE client that reads the wire format itself (id:/data:/comment lines), so the
tests see exactly what a browser's EventSource would."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

DEFAULT_TIMEOUT = 5.0


@dataclass
class SSEEvent:
    id: str | None
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return self.data["type"]  # type: ignore[no-any-return]

    @property
    def payload(self) -> dict[str, Any]:
        return self.data["payload"]  # type: ignore[no-any-return]


class SSEStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, timeout: float = DEFAULT_TIMEOUT) -> SSEEvent:
        """The next event; raises TimeoutError if none arrives in time, EOFError at the end."""
        event_id: str | None = None
        data_lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("stream ended")
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data_lines:
                        return SSEEvent(event_id, json.loads("\n".join(data_lines)))
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "id":
                    event_id = value
                elif field == "data":
                    data_lines.append(value)

    async def next_of(self, *types: str, timeout: float = DEFAULT_TIMEOUT) -> SSEEvent:
        """The next event of one of ``types``, skipping heartbeats and others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event.type in types:
                    return event

    async def take(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[SSEEvent]:
        """The next ``count`` events that are not heartbeats."""
        events: list[SSEEvent] = []
        async with asyncio.timeout(timeout):
            while len(events) < count:
                event = await self.next(timeout)
                if event.type != "heartbeat":
                    events.append(event)
        return events

    async def assert_quiet(self, seconds: float = 0.3) -> None:
        """Nothing but heartbeats arrives for ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    event = await self.next(seconds + 1)
                    assert event.type == "heartbeat", f"unexpected event {event}"
        except TimeoutError:
            pass


@asynccontextmanager
async def open_stream(
    session: Any, url: str, *, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[SSEStream, SSEEvent]]:
    """Open an SSE stream with ``session.get`` (aiohttp ClientSession or TestClient); yields
    the stream and its ``connected`` event, which must come first."""
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = SSEStream(response)
        connected = await stream.next()
        assert connected.type == "connected", connected
        yield stream, connected
