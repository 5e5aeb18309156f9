"""The answer of POST /chatbot/api/chat/stream: the bot's reply as SSE frames, as it comes.

Frames (docs/api.md, "Streamed chat"): ``chunk`` {session_name, index, text} per piece of the
reply, then ``done`` with what /api/chat answers; or ``cancelled`` (the conversation left the
bot while it answered: nothing of the reply is stored), or ``error`` (the JSON error body).
"""

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http import StreamWriter

from app.web.errors import error_response
from app.web.middlewares import _from_exception
from handlers.sse import SEND_TIMEOUT
from realtime.events import named_frame

logger = logging.getLogger(__name__)

# An event stream that no proxy buffers and nobody caches.
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class ReplyStream:
    """The answer of /api/chat/stream: SSE frames with an ``event:`` name and no ``id:`` (a
    response to one request, not a channel's events: nothing to resume).

    Frames are handed to the socket without waiting for the client (``drain=False``): a reply
    is a few kilobytes, so the buffer stays small, and a slow or departed client never holds
    up storing and publishing the reply. A failed write means the client has left: the stream
    stops writing and the conversation goes on (the handler runs shielded, see
    ``app.web.middlewares.shielded``)."""

    def __init__(self, request: web.Request, session_name: str) -> None:
        self.response = web.StreamResponse(headers=STREAM_HEADERS)
        self._request = request
        self._session_name = session_name
        self._writer: StreamWriter | None = None
        self._chunks = 0
        self.started = False  # the customer's message is in: errors are events from here on
        self.gone = False  # the client has left: nothing more is written

    async def start(self) -> None:
        """Send the 200 and the headers: the customer's message is stored and published."""
        self.started = True
        try:
            writer = await self.response.prepare(self._request)
        except OSError as exc:  # gone before the headers: the conversation goes on regardless
            self._left(exc)
            return
        assert isinstance(writer, StreamWriter)
        self._writer = writer

    def _left(self, exc: BaseException) -> None:
        logger.debug("chat stream: the client has left: %r", exc)
        self.gone = True

    async def chunk(self, text: str) -> None:
        """One piece of the bot's reply, as the responder produced it."""
        await self.send("chunk", {"session_name": self._session_name, "index": self._chunks, "text": text})
        self._chunks += 1

    async def fail(self, exc: Exception) -> None:
        """The reply failed after the stream started: an ``error`` event with the JSON error
        body /api/chat would have answered (logged as the middleware logs it)."""
        response = _from_exception(exc)
        if response is None:
            request = self._request
            logger.exception("unhandled error on %s %s", request.method, request.rel_url.raw_path)
            response = error_response(500, "internal_error", "internal server error")
        assert response.text is not None
        await self.send("error", json.loads(response.text))

    async def send(self, event: str, data: dict[str, Any]) -> None:
        if self.gone or self._writer is None:
            return
        frame = named_frame(event, data)
        try:
            # drain=False: written (and chunk-framed) at once, never waiting for the client.
            await self._writer.write(frame, drain=False)
        except OSError as exc:  # ClientConnectionResetError: the client has left
            self._left(exc)

    async def finish(self) -> web.StreamResponse:
        """End the response (waiting for the client at most SEND_TIMEOUT)."""
        if self._writer is not None and not self.gone:
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self.response.write_eof()
            except (OSError, TimeoutError) as exc:
                logger.debug("chat stream: could not end the response: %r", exc)
                if self._request.transport is not None:
                    self._request.transport.abort()
        return self.response
