"""HTTP exchanges that note when each byte arrived, to order what came on two connections.

Each ``data_received`` is stamped as asyncio calls it. Linux's epoll reports sockets in the
order they became readable, and asyncio runs their callbacks in that order, so the stamps of
two connections read by one loop follow the order their bytes reached this host (what an
``await`` on a client library would blur: tasks resume later, in any order)."""

import asyncio
import json
import time
from typing import Any

HOST = "127.0.0.1"


class TimedExchange(asyncio.Protocol):
    """One request, its answer read to the close (``Connection: close``), every piece stamped."""

    def __init__(self) -> None:
        self.pieces: list[tuple[float, bytes]] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.pieces.append((time.monotonic(), data))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def data(self) -> bytes:
        return b"".join(piece for _, piece in self.pieces)

    def arrival(self, offset: int) -> float:
        """When the byte at ``offset`` of the answer arrived."""
        seen = 0
        for stamp, piece in self.pieces:
            seen += len(piece)
            if offset < seen:
                return stamp
        raise IndexError(offset)

    def status(self) -> int:
        return int(self.data.split(b" ", 2)[1])


async def post(port: int, path: str, body: dict[str, Any]) -> TimedExchange:
    """Send a JSON POST; the exchange fills as the answer comes (await ``closed``)."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    transport, exchange = await loop.create_connection(TimedExchange, HOST, port)
    transport.write(head + payload)
    return exchange


def frame_ends(data: bytes, event: bytes) -> list[int]:
    """Offsets of the last byte of every ``event:`` frame named ``event`` (its blank line)."""
    ends, start = [], 0
    marker = b"event: " + event + b"\n"
    while (found := data.find(marker, start)) >= 0:
        end = data.find(b"\n\n", found)
        ends.append(end + 1 if end >= 0 else len(data) - 1)
        start = found + len(marker)
    return ends
