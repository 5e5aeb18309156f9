"""The SSE writer: subscription → wire, for every stream endpoint, and the registry of open
streams (so that shutdown ends them promptly, and the limits count them).

The subscription is live before ``connected`` is sent, so anything published after a client
sees ``connected`` reaches it. Events then go straight from the broker's fan-out to the socket
(``FrameWriter.offer``, one ``transport.write`` of bytes shared by all streams) while the
socket takes them; only a stream whose client reads slowly queues, and its handler writes the
queue in one go once the socket drains. Heartbeats come from one process-wide ticker
(``send_heartbeats``), not a timer per stream. The server runs with handler cancellation, so
a client that leaves cancels its handler at once and the ``async with`` releases its channels.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse

from app.domain.auth import Principal
from app.keys import BACKENDS, COMPONENT, SENT, SETTINGS, STREAMS
from app.web.errors import ApiError
from realtime.broker import Subscription, SubscriptionClosed, SubscriptionGap, SubscriptionOverflow
from realtime.events import (
    RETRY_MAX_MS,
    RETRY_MIN_MS,
    Event,
    encode,
    envelope,
    http_chunk,
    sse_frame,
)

logger = logging.getLogger(__name__)

# A client whose socket stays full this long is dropped (also by the kernel: TCP_USER_TIMEOUT).
SEND_TIMEOUT = EventSourceResponse.DEFAULT_SEND_TIMEOUT or 120.0
# Streams written per loop iteration by the heartbeat ticker, so requests interleave.
HEARTBEAT_SLICE = 500


class EventStreamResponse(EventSourceResponse):
    """aiohttp-sse's response (headers, method check, TCP_USER_TIMEOUT so a hung peer is
    dropped by the kernel) without its ping task per stream: our heartbeat is one ticker for
    the whole process, which saves a task, a timer and about a kilobyte per idle stream."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        if request.transport is None:
            # The client left between sending its request and the stream's start (aiohttp-sse
            # would fail an assertion here: a 500 and a traceback for an ordinary departure).
            raise ConnectionResetError("the client left before the stream started")
        self._set_tcp_user_timeout(request)
        return await web.StreamResponse.prepare(self, request)


class WriteTurns:
    """Which turn of the event loop this is, for the streams' writes: a stream's first frame
    of a turn is written at once, and what else it takes in the same turn (the pub/sub reader
    handing over several events in a row) is written together at the turn's end. One callback
    per turn for all streams: a callback per stream cost more than the writes it saved."""

    __slots__ = ("_loop", "_scheduled", "_waiting", "turn")

    def __init__(self) -> None:
        self.turn = 0
        self._scheduled = False
        self._waiting: list[FrameWriter] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def wrote(self) -> None:
        """A stream wrote in this turn: the turn must end (and be counted) after it."""
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._end_turn)

    def hold(self, writer: "FrameWriter") -> None:
        self._waiting.append(writer)
        self.wrote()

    def _end_turn(self) -> None:
        self.turn += 1
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        for writer in waiting:
            writer.flush()


class FrameWriter:
    """Writes frames to one stream's socket; ``offer`` never waits, ``write`` may."""

    __slots__ = ("_chunked", "_held", "_protocol", "_send_timeout", "_turn", "_turns", "_writer")

    def __init__(
        self, writer: AbstractStreamWriter, request: web.Request, send_timeout: float, turns: WriteTurns
    ) -> None:
        self._writer = writer
        self._protocol = request.protocol
        # HTTP/1.1 bodies are chunked (EventSource always speaks it); HTTP/1.0 ones are not.
        self._chunked = bool(getattr(writer, "chunked", False))
        self._send_timeout = send_timeout
        self._turns = turns
        self._turn = -1  # the turn of this stream's last write
        # Taken this turn after its first write, written at its end; None (no list kept per
        # stream) while there is nothing to hold.
        self._held: list[bytes] | None = None

    def offer(self, event: Event) -> bool:
        """The subscription's write-through: the event's shared bytes, if the socket takes
        them now (its buffer is under the high-water mark); else False, and it is queued."""
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or protocol.writing_paused or transport.is_closing():
            return False
        data = event.chunk if self._chunked else event.frame
        turns = self._turns
        if self._turn != turns.turn:
            self._turn = turns.turn
            turns.wrote()
            return self.write_now(data)
        if self._held is None:
            self._held = [data]
            turns.hold(self)
        else:
            self._held.append(data)
        return True

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self.write_now(held[0] if len(held) == 1 else b"".join(held))

    def bytes_of(self, event: Event) -> bytes:
        return event.chunk if self._chunked else event.frame

    def heartbeat(self, frame: bytes, chunk: bytes) -> None:
        self.write_now(chunk if self._chunked else frame)

    def write_now(self, data: bytes) -> bool:
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or protocol.writing_paused or transport.is_closing():
            return False
        try:
            transport.write(data)
        except (OSError, RuntimeError) as exc:
            logger.debug("stream write failed: %r", exc)
            return False
        return True

    def wire(self, frame: bytes) -> bytes:
        return http_chunk(frame) if self._chunked else frame

    async def write(self, data: bytes) -> None:
        """Write, then wait (at most the send timeout) while the client's socket is full;
        raises ConnectionResetError when the client is gone, TimeoutError when it stalls."""
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(data)
        if self._protocol.writing_paused:
            try:
                async with asyncio.timeout(self._send_timeout):
                    await self._writer.drain()
            except TimeoutError:
                transport.abort()
                raise


@dataclass(eq=False, slots=True)
class OpenStream:
    frames: FrameWriter
    subscription: Subscription
    component: str
    # A session's stream: (name, incarnation) of the session, which it ends with.
    session: tuple[str, str] | None = None


@dataclass(slots=True)
class StreamRegistry:
    """Open streams, and the places reserved for streams being opened.

    A place is reserved before the first await of a stream's opening, so a burst of requests
    cannot all pass the limits while none of them is registered yet.
    """

    _open: set[OpenStream] = field(default_factory=set)
    _places: int = 0
    _places_by_owner: Counter[str] = field(default_factory=Counter)
    opened_total: int = 0
    # The turns of the event loop that the streams' writes are grouped by (FrameWriter).
    turns: WriteTurns = field(default_factory=WriteTurns)
    _ending: bool = False

    def reserve(self, owner: str | None, max_total: int, max_per_owner: int) -> str | None:
        """Take a place for a new stream; None if granted, else which limit refused it
        ("process" or "owner"). A granted place must be given back with ``release``."""
        if self._places >= max_total:
            return "process"
        if owner is not None and self._places_by_owner[owner] >= max_per_owner:
            return "owner"
        self._places += 1
        if owner is not None:
            self._places_by_owner[owner] += 1
        return None

    def release(self, owner: str | None) -> None:
        self._places -= 1
        if owner is not None:
            self._places_by_owner[owner] -= 1
            if not self._places_by_owner[owner]:
                del self._places_by_owner[owner]

    def add(self, stream: OpenStream) -> None:
        self._open.add(stream)
        self.opened_total += 1
        if self._ending:  # opened while the process stops: ended at once, like the others
            stream.subscription.close()

    def discard(self, stream: OpenStream) -> None:
        self._open.discard(stream)

    def open_streams(self) -> list[OpenStream]:
        return list(self._open)

    def __len__(self) -> int:
        """Streams open or opening."""
        return self._places

    def by_component(self) -> dict[str, int]:
        return dict(Counter(stream.component for stream in self._open))

    def close_all(self) -> None:
        """End every open stream, and each one still opening as soon as it opens: each
        handler sends a reconnection hint and returns, before the server's shutdown timeout."""
        self._ending = True
        if self._open:
            logger.info("ending %d open streams", len(self._open))
        for stream in self._open:
            stream.subscription.close()


def system_frame(type_: str, payload: dict[str, Any], event_id: str | None = None) -> bytes:
    return sse_frame(encode(envelope(type_, payload, "system")), event_id)


def _retry_frame() -> bytes:
    """A reconnection hint for a stream the server ends; jittered so that the clients of a
    restarting process do not all come back in the same millisecond."""
    return f"retry: {random.randint(RETRY_MIN_MS, RETRY_MAX_MS)}\n\n".encode()


async def send_heartbeats(registry: StreamRegistry, interval: float) -> None:
    """Every ``interval``, a heartbeat event to every open stream whose socket has room (one
    that has not is busy with events anyway): it keeps proxies from closing idle streams and
    lets clients notice a dead connection."""
    while True:
        await asyncio.sleep(interval)
        frame = system_frame("heartbeat", {})
        chunk = http_chunk(frame)
        streams = registry.open_streams()
        for start in range(0, len(streams), HEARTBEAT_SLICE):
            for stream in streams[start : start + HEARTBEAT_SLICE]:
                stream.frames.heartbeat(frame, chunk)
            await asyncio.sleep(0)


def resume_position(request: web.Request) -> str | None:
    """Where a reconnecting client left off: the Last-Event-ID header (sent by EventSource on
    its own reconnects, so it is newer than a query string the page once built), else
    ``?last_event_id=`` for clients that cannot set headers."""
    resumed = request.headers.get("Last-Event-ID")
    if resumed:
        return resumed
    # Parsed only if it may be there: the parsed query stays cached on the request, for as long
    # as the stream is open.
    if "last_event_id" not in request.rel_url.raw_query_string:
        return None
    return request.query.get("last_event_id") or None


def stream_events(
    request: web.Request,
    channels: tuple[str, ...],
    connected: dict[str, Any],
    principal: Principal | None,
    presence: str | None = None,
    accepts: Callable[[Event], bool] | None = None,
    session: tuple[str, str] | None = None,
) -> Coroutine[Any, Any, web.StreamResponse]:
    """Check the limits and take the stream's place, then give the handler the stream to
    await. Not a coroutine itself: a suspended frame per open stream is memory per stream, so
    the chain of them is kept short (the place is given back by the stream when it ends)."""
    settings = request.config_dict[SETTINGS]
    registry = request.config_dict[STREAMS]
    owner = principal.key if principal is not None else None
    if len(channels) > settings.max_channels:
        raise ApiError(400, "too_many_channels", f"a stream carries at most {settings.max_channels} channels")
    refused = registry.reserve(owner, settings.max_streams, settings.max_streams_per_token)
    if refused == "process":
        raise ApiError(
            503,
            "too_many_streams",
            "this process holds as many streams as it may; retry shortly",
            headers={"Retry-After": "5"},
        )
    if refused == "owner":
        raise ApiError(
            429,
            "too_many_streams",
            "this token holds as many streams as it may; close one first",
            headers={"Retry-After": "5"},
        )
    return _serve(request, channels, connected, owner, presence, accepts, session)


async def _serve(
    request: web.Request,
    channels: tuple[str, ...],
    connected: dict[str, Any],
    owner: str | None,
    presence: str | None,
    accepts: Callable[[Event], bool] | None,
    session: tuple[str, str] | None,
) -> web.StreamResponse:
    registry = request.config_dict[STREAMS]
    try:
        broker = request.config_dict[BACKENDS].broker
        # Entering the subscription makes it live, then reads the history after the resumed
        # id (if any): nothing falls between the replay and the live events.
        # Whatever the stream, the chatbot side never carries the agents' internal events.
        subscribing = broker.subscribe(
            *channels,
            resume_from=resume_position(request),
            presence=presence,
            accepts=accepts,
            public_only=request.app[COMPONENT] == "chatbot",
        )
        del channels  # the subscription holds its own tuple of them
        async with subscribing as subscription:
            response = EventStreamResponse()
            writer = await response.prepare(request)
            assert writer is not None
            frames = FrameWriter(writer, request, SEND_TIMEOUT, registry.turns)
            stream = OpenStream(frames, subscription, request.app[COMPONENT], session)
            registry.add(stream)
            _log_open(subscription)
            opened, ended = time.monotonic(), "client left"
            # Nothing the stream no longer needs stays referenced from this frame: every
            # byte here is memory per open stream.
            hello = system_frame(
                "connected", {**connected, "recovered": subscription.recovered}, subscription.position
            )
            del connected
            try:
                # Through aiohttp: the first write carries the response headers with it.
                await response.write(hello)
                del hello
                # The head is on the wire with it: nothing reads the response's headers again
                # (aiohttp only ends the chunked body), and the dict holds about 1.5 KiB with
                # the strings its serialization cached in it.
                response.headers.clear()
                # aiohttp's keep-alive timer (a timer handle and its context) would only reschedule
                # itself while a handler runs; aiohttp sets keep-alive anew from the response once
                # the stream ends, and times the idle connection from then on.
                request.protocol.keep_alive(False)
                subscription.write_through(frames.offer)
                # What the write-through could not take: all queued events in one write. The
                # wait is in this frame, not in a coroutine of the subscription's.
                while True:
                    events = subscription.take()
                    if events is None:
                        await subscription.arrival()
                    else:
                        await frames.write(b"".join(map(frames.bytes_of, events)))
                        del events
            except (ConnectionResetError, TimeoutError) as exc:
                # The client went away or stalled: nothing more to send.
                ended = "client stalled" if isinstance(exc, TimeoutError) else "client left"
            except SubscriptionOverflow:
                ended = "client too slow: cut off"
                await _hint_retry(frames)
            except SubscriptionClosed as exc:
                # A gap the history cannot fill, or the server ends the stream (shutdown).
                ended = "gap: resume" if isinstance(exc, SubscriptionGap) else "server ended it"
                await _hint_retry(frames)
            finally:
                subscription.write_through(None)
                registry.discard(stream)
                request[SENT] = (response.status, True)  # for the request's log line
                _log_close(subscription, time.monotonic() - opened, ended)
        return response
    finally:
        registry.release(owner)


def _log_open(subscription: Subscription) -> None:
    where = ",".join(subscription.channels)
    logger.info(
        "stream opened on %s at %s (recovered: %s)",
        where,
        subscription.position,
        subscription.recovered,
        extra={"channels": where, "stream": "open"},
    )


def _log_close(subscription: Subscription, seconds: float, ended: str) -> None:
    where = ",".join(subscription.channels)
    logger.log(
        logging.WARNING if ended.startswith("client too slow") else logging.INFO,
        "stream closed on %s after %.1f s: %s",
        where,
        seconds,
        ended,
        extra={"channels": where, "stream": "closed", "seconds": round(seconds, 1), "reason": ended},
    )


async def _hint_retry(frames: FrameWriter) -> None:
    with contextlib.suppress(ConnectionResetError, TimeoutError, RuntimeError):
        await frames.write(frames.wire(_retry_frame()))
