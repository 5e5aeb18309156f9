"""The SSE writer: subscription → queue → wire, for every stream endpoint.

The subscription is live before ``connected`` is sent, so anything published after a client
sees ``connected`` reaches it. The server runs with handler cancellation, so a client that
leaves cancels this handler at once and the ``async with`` releases its channels; a failed
write (heartbeat included) ends the stream too, for servers run without it.
"""

import asyncio
import logging
import random
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from app.auth import Principal
from app.errors import ApiError
from app.keys import BACKENDS, COMPONENT, SETTINGS, STREAMS
from app.streams import OpenStream
from realtime.broker import (
    Subscription,
    SubscriptionClosed,
    SubscriptionGap,
    SubscriptionOverflow,
)
from realtime.events import encode, envelope, sse_frame

logger = logging.getLogger(__name__)

# aiohttp-sse's comment pings only duplicate our heartbeat event; keep them rare.
PING_INTERVAL = 3600.0
# The reconnection delay suggested to a client whose stream the server ends.
RETRY_MIN_MS = 1000
RETRY_MAX_MS = 3000


class EventStreamResponse(EventSourceResponse):
    """An SSE response that writes frames already encoded once per event, for every stream."""

    async def send_frame(self, frame: bytes) -> None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await self.write(frame)
        except ConnectionResetError:
            self.stop_streaming()
            raise
        except TimeoutError:
            self.stop_streaming()
            self._abort_transport()
            raise


def _system_frame(type_: str, payload: dict[str, Any], event_id: str | None = None) -> bytes:
    return sse_frame(encode(envelope(type_, payload, "system")), event_id)


def _retry_frame() -> bytes:
    """A reconnection hint for a stream the server ends; jittered so that the clients of a
    restarting process do not all come back in the same millisecond."""
    return f"retry: {random.randint(RETRY_MIN_MS, RETRY_MAX_MS)}\n\n".encode()


def resume_position(request: web.Request) -> str | None:
    """Where a reconnecting client left off: the Last-Event-ID header (sent by EventSource on
    its own reconnects, so it is newer than a query string the page once built), else
    ``?last_event_id=`` for clients that cannot set headers."""
    return request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or None


async def stream_events(
    request: web.Request,
    channels: tuple[str, ...],
    connected: dict[str, Any],
    principal: Principal | None,
) -> web.StreamResponse:
    settings = request.config_dict[SETTINGS]
    heartbeat = settings.heartbeat
    registry = request.config_dict[STREAMS]
    owner = principal.key if principal is not None else None
    if len(channels) > settings.max_channels:
        raise ApiError(400, "too_many_channels", f"a stream carries at most {settings.max_channels} channels")
    refused = registry.reserve(owner, settings.max_streams, settings.max_streams_per_token)
    if refused == "process":
        raise ApiError(
            503, "too_many_streams", "this process holds as many streams as it may; retry shortly",
            headers={"Retry-After": "5"},
        )
    if refused == "owner":
        raise ApiError(
            429, "too_many_streams", "this token holds as many streams as it may; close one first",
            headers={"Retry-After": "5"},
        )
    try:
        return await _serve(request, channels, connected, heartbeat)
    finally:
        registry.release(owner)


async def _serve(
    request: web.Request,
    channels: tuple[str, ...],
    connected: dict[str, Any],
    heartbeat: float,
) -> web.StreamResponse:
    registry = request.config_dict[STREAMS]
    broker = request.config_dict[BACKENDS].broker
    # Entering the subscription makes it live, then reads the history after the resumed id
    # (if any): nothing falls between the replay and the live events.
    async with broker.subscribe(*channels, resume_from=resume_position(request)) as subscription:
        async with sse_response(
            request, response_cls=EventStreamResponse, ping_interval=PING_INTERVAL
        ) as response:
            stream = OpenStream(response, subscription, request.app[COMPONENT])
            registry.add(stream)
            where = ",".join(channels)
            logger.debug("stream opened on %s at %s", where, subscription.position)
            payload = {**connected, "recovered": subscription.recovered}
            try:
                await response.send_frame(_system_frame("connected", payload, subscription.position))
                await _pump(response, subscription, heartbeat)
            except (ConnectionResetError, TimeoutError):
                pass  # the client went away or stalled: nothing more to send
            except SubscriptionOverflow:
                logger.warning("stream on %s cut off: client too slow", where)
                await _hint_retry(response)
            except SubscriptionGap:
                await _hint_retry(response)
            else:
                await _hint_retry(response)  # the server ends the stream (shutdown)
            finally:
                registry.discard(stream)
                logger.debug("stream closed on %s", where)
    return response


async def _hint_retry(response: EventStreamResponse) -> None:
    try:
        await response.send_frame(_retry_frame())
    except (ConnectionResetError, TimeoutError, RuntimeError):
        pass


async def _pump(response: EventStreamResponse, subscription: Subscription, heartbeat: float) -> None:
    """Queue to wire until the subscription ends (returns) or the client goes (raises)."""
    while True:
        try:
            event = await subscription.get(timeout=heartbeat)
        except (SubscriptionOverflow, SubscriptionGap):
            raise
        except SubscriptionClosed:
            return
        if event is None:
            await response.send_frame(_system_frame("heartbeat", {}))
        else:
            await response.send_frame(event.frame)
