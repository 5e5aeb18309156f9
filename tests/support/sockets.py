"""Raw sockets for the tests that play a client HTTP libraries will not: one that vanishes, one
that sends bytes no library would (malformed, or slowly), and reads whatever comes back."""

import asyncio
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"
MAX_ANSWER = 64 * 1024  # bytes of an answer read at most
MAX_READS = 1000  # reads of one answer at most


def close_with_reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0): the client vanished, it did not leave."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(frozen=True)
class RawAnswer:
    """What came back on a raw connection: nothing (``status`` None: closed without an answer)
    or one HTTP answer, its header names lower-cased."""

    status: int | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_exchange(port: int, *parts: bytes, pause: float = 0.0, timeout: float) -> RawAnswer:
    """Send ``parts`` as they are (``pause`` seconds apart), then read one answer: its head and
    as much body as its Content-Length says, or everything up to the server's close. Fails with
    TimeoutError if neither comes within ``timeout``."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for index, part in enumerate(parts):
                if index and pause:
                    await asyncio.sleep(pause)
                writer.write(part)
                await writer.drain()
            return await _read_answer(reader)
        except ConnectionResetError:
            return RawAnswer(None, {}, b"")
        finally:
            writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    data = b""
    for _ in range(MAX_READS):
        chunk = await reader.read(4096)
        data += chunk
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, field = line.partition(":")
                headers[name.strip().lower()] = field.strip()
            length = int(headers.get("content-length", "-1"))
            if not chunk or len(body) >= length >= 0 or len(data) > MAX_ANSWER:
                return RawAnswer(int(status_line.split()[1]), headers, body)
        elif not chunk:
            return RawAnswer(None, {}, data)
    raise AssertionError(f"no whole answer in {MAX_READS} reads: {data[:200]!r}")
