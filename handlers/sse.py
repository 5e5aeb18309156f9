"""The SSE writer: subscription → queue → wire, for every stream endpoint.

The subscription is live before ``connected`` is sent, so anything published after a client
sees ``connected`` reaches it. The server runs with handler cancellation, so a client that
leaves cancels this handler at once and the ``async with`` releases its channels; a failed
write (heartbeat included) ends the stream too, for servers run without it.
"""

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from app.keys import BACKENDS, COMPONENT, SETTINGS, STREAMS
from app.streams import OpenStream
from realtime.broker import SubscriptionClosed, SubscriptionOverflow
from realtime.events import encode, envelope, sse_frame

logger = logging.getLogger(__name__)

# aiohttp-sse's comment pings only duplicate our heartbeat event; keep them rare.
PING_INTERVAL = 3600.0


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


async def stream_events(
    request: web.Request, channels: tuple[str, ...], connected: dict[str, Any]
) -> web.StreamResponse:
    backends = request.config_dict[BACKENDS]
    heartbeat = request.config_dict[SETTINGS].heartbeat
    registry = request.config_dict[STREAMS]
    broker = backends.broker
    # Read the position before subscribing: every event delivered live then has a larger id.
    position = await broker.last_id(channels)
    async with broker.subscribe(*channels) as subscription:
        async with sse_response(
            request, response_cls=EventStreamResponse, ping_interval=PING_INTERVAL
        ) as response:
            stream = OpenStream(response, subscription, request.app[COMPONENT])
            registry.add(stream)
            logger.debug("stream opened on %s", ",".join(channels))
            try:
                await response.send_frame(_system_frame("connected", connected, position))
                await _pump(response, subscription, heartbeat)
            except (ConnectionResetError, TimeoutError):
                pass  # the client went away or stalled: nothing more to send
            except SubscriptionOverflow:
                logger.warning("stream on %s cut off: client too slow", ",".join(channels))
            finally:
                registry.discard(stream)
                logger.debug("stream closed on %s", ",".join(channels))
    return response


async def _pump(response: EventStreamResponse, subscription: Any, heartbeat: float) -> None:
    while response.is_connected():
        try:
            event = await subscription.get(timeout=heartbeat)
        except SubscriptionOverflow:
            raise
        except SubscriptionClosed:
            return
        if event is None:
            await response.send_frame(_system_frame("heartbeat", {}))
        else:
            await response.send_frame(event.frame)
