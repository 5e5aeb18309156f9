"""A lean SSE client on asyncio's Protocol API: one HTTP/1.1 GET, a chunked body, frames of
``id:`` / ``data:`` lines separated by a blank line. Lean on purpose (no aiohttp, no JSON
parsing per event): the load generator must cost far less than the server it measures.

The benchmark's messages carry ``t=<send time> n=<sequence number>`` as their content; a
regular expression takes both out of the ``data:`` line without decoding the JSON.
"""

import asyncio
import re
import time
from array import array

CONTENT = re.compile(rb'"content":"t=([0-9.]+) n=([0-9]+)"')
CONNECTED = b'"type":"connected"'
HEAD_END = b"\r\n\r\n"


class StreamState:
    """One stream as the receiver sees it: its session, the sequence numbers it got in the
    current scenario, and whether it is open."""

    __slots__ = ("closed", "duplicates", "error", "last_id", "ready", "seen", "session")

    def __init__(self, session: int, ready: asyncio.Future[None]) -> None:
        self.session = session
        self.seen: set[int] = set()
        self.duplicates = 0
        self.ready = ready
        self.closed = False
        self.error: str | None = None
        self.last_id: bytes | None = None

    def fail(self, error: str) -> None:
        """The stream could not open (or ended before it did)."""
        self.error = self.error or error
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.error))
            self.ready.exception()  # marked retrieved: nobody may be waiting for it any more


class Recorder:
    """What every stream of this process received during the current scenario."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, base: int) -> None:
        """Start a scenario whose sequence numbers begin at ``base``."""
        self.base = base
        self.latencies = array("d")
        self.deliveries = 0
        self.duplicates = 0
        self.stale = 0
        self.first: float | None = None
        self.last: float | None = None

    def message(self, stream: StreamState, seq: int, sent: float, now: float) -> None:
        if seq < self.base:
            self.stale += 1  # a late event of the previous scenario
            return
        if seq in stream.seen:
            stream.duplicates += 1
            self.duplicates += 1
            return
        stream.seen.add(seq)
        self.latencies.append(now - sent)
        self.deliveries += 1
        if self.first is None:
            self.first = now
        self.last = now


class SseProtocol(asyncio.Protocol):
    """Reads one event stream into a StreamState and the process's Recorder."""

    def __init__(self, request: bytes, stream: StreamState, recorder: Recorder) -> None:
        self._request = request
        self._stream = stream
        self._recorder = recorder
        self._raw = bytearray()
        self._body = bytearray()
        self._in_head = True
        self._chunked = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream.closed = True
        self._stream.fail(f"closed before connected ({type(exc).__name__ if exc else 'EOF'})")

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._raw += data
        if self._in_head and not self._read_head():
            return
        if self._chunked:
            self._dechunk()
        else:
            self._body += self._raw
            self._raw.clear()
        end = self._body.rfind(b"\n\n")
        if end < 0:
            return
        block = bytes(self._body[:end])
        del self._body[: end + 2]
        for frame in block.split(b"\n\n"):
            self._frame(frame, now)

    def _read_head(self) -> bool:
        """Consume the response head; False while it is incomplete or if it refused."""
        end = self._raw.find(HEAD_END)
        if end < 0:
            return False
        head = bytes(self._raw[:end]).decode("latin-1")
        del self._raw[: end + len(HEAD_END)]
        status_line, _, headers = head.partition("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 200:
            self._stream.fail(f"HTTP {status}")
            assert self.transport is not None
            self.transport.close()
            return False
        self._in_head = False
        self._chunked = "transfer-encoding: chunked" in headers.lower()
        return True

    def _dechunk(self) -> None:
        """Move every complete chunk from the raw buffer to the body."""
        raw = self._raw
        pos = 0
        while True:
            eol = raw.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(bytes(raw[pos:eol]).split(b";", 1)[0], 16)
            start = eol + 2
            if size == 0:  # the last chunk: the server ended the stream
                pos = len(raw)
                break
            if len(raw) < start + size + 2:
                break
            self._body += raw[start : start + size]
            pos = start + size + 2
        del raw[:pos]

    def _frame(self, frame: bytes, now: float) -> None:
        """One event: its ``id:`` and ``data:`` lines (other fields and comments ignored)."""
        data_lines = []
        for line in frame.split(b"\n"):
            if line.startswith(b"data:"):
                data_lines.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"id:"):
                self._stream.last_id = line[3:].strip()
        if not data_lines:
            return
        data = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
        match = CONTENT.search(data)
        if match is not None:
            self._recorder.message(self._stream, int(match[2]), float(match[1]), now)
        elif CONNECTED in data and not self._stream.ready.done():
            self._stream.ready.set_result(None)


def request_bytes(host: str, port: int, path: str) -> bytes:
    """The GET that opens a stream, as a browser's EventSource sends it (less cookies)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()
