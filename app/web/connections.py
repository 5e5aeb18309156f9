"""A connection, before the app sees its requests: a deadline for the client to send each
request, and the JSON error shape for a request aiohttp cannot parse.

aiohttp bounds a silent connection but not a slow one: a client sending one header line, or
one body byte, every few seconds holds its connection (a socket, a task, buffers) for as long
as it likes, and a few thousand such clients exhaust a process. Here a connection has
``client_timeout`` seconds from its start, or from its previous response, to send a whole
request head, and as long again from the head to finish the body; then it is closed. The clock
stops while a handler runs: an event stream is a response, and is never cut by it.

aiohttp has no switch for its connection class: ``guarded_connections`` makes the protocol
factory that app.process.serving listens with.
"""

import asyncio
import logging
import secrets
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from app.process.logs import NO_REQUEST, request_id
from app.web.errors import error_response
from app.web.middlewares import HTTP_CODES, REQUEST_ID_HEADER
from app.web.security import SECURITY_HEADERS

logger = logging.getLogger(__name__)

# What a connection was sending when its time ran out: nothing yet (a silent connection, or a
# keep-alive one left idle), part of a request head, or a request body.
Stage = Literal["idle", "head", "body"]
STAGES: tuple[Stage, ...] = ("idle", "head", "body")
ERROR_CODES = {**HTTP_CODES, 500: "internal_error"}

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, web.RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    web.BaseRequest,
]


class TimedOut:
    """Connections closed because their client was too slow, by stage; read by /metrics."""

    def __init__(self) -> None:
        self.by_stage: dict[Stage, int] = dict.fromkeys(STAGES, 0)


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection, with a deadline on reading each request and JSON for the requests
    it refuses. Its only hook into aiohttp beyond public methods is ``head_received``, which
    the server's request factory calls (see ``guarded_connections``)."""

    __slots__ = ("_body", "_client_timeout", "_deadline", "_handling", "_stage", "_timed_out")

    def __init__(
        self, manager: web.Server, *, client_timeout: float, timed_out: TimedOut, **options: Any
    ) -> None:
        super().__init__(manager, **options)
        self._client_timeout = client_timeout
        self._timed_out = timed_out
        self._deadline: asyncio.TimerHandle | None = None
        self._stage: Stage = "idle"
        self._body: StreamReader | None = None
        self._handling = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm("idle")

    def data_received(self, data: bytes) -> None:
        if data and self._stage == "idle" and not self._handling:
            self._stage = "head"
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def head_received(self, payload: StreamReader) -> None:
        """A request head is parsed and its handler about to run: its body (if any) now has
        its own deadline, and nothing else is timed until the response is sent."""
        self._handling = True
        self._body = payload
        if payload.is_eof():
            self._disarm()
        else:
            self._arm("body")

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            # The next request's clock starts, unless this one's body is still arriving (aiohttp
            # reads it to the end before the next head): its own deadline still stands.
            self._handling = False
            if self._body is not None and self._body.exception() is not None:
                # A body that broke mid-way (bad chunk, bad gzip) has no end to read to:
                # aiohttp would try, and log the failure as an unhandled exception.
                self.force_close()
            elif not self._body_pending():
                self._arm("idle")

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it cannot parse (or to an error that escaped the
        request middleware), in the API's JSON error shape, with the same status. aiohttp
        still logs it (logs.MalformedRequestFilter makes that one WARNING line, with the id
        given here); its message stays out of the body, since it quotes the request."""
        if request_id.get() == NO_REQUEST:  # a request no middleware saw
            request_id.set(secrets.token_hex(8))
        super().handle_error(request, status, exc, message)  # logs; raises if an answer began
        response = error_response(
            status,
            ERROR_CODES.get(status, "http_error"),
            _describe(status, exc),
            headers={**SECURITY_HEADERS, REQUEST_ID_HEADER: request_id.get(), "Connection": "close"},
        )
        response.force_close()
        return response

    def _arm(self, stage: Stage) -> None:
        self._disarm()
        if self.transport is None:  # closing already
            return
        self._stage = stage
        self._deadline = asyncio.get_running_loop().call_later(self._client_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _body_pending(self) -> bool:
        return self._body is not None and not self._body.is_eof()

    def _expire(self) -> None:
        self._deadline = None
        if self._stage == "body" and not self._body_pending():
            # The body did arrive in time; the next request's clock starts after the response.
            if not self._handling:
                self._arm("idle")
            return
        self._timed_out.by_stage[self._stage] += 1
        # DEBUG: a slowloris flood would otherwise flood the log; the metric counts them.
        logger.debug(
            "closed a slow connection: its request %s was not complete within %.1f s",
            self._stage,
            self._client_timeout,
        )
        self.force_close()


def _describe(status: int, exc: BaseException | None) -> str:
    if isinstance(exc, LineTooLong):
        return "request line or header too long"
    if isinstance(exc, HttpProcessingError):
        return "malformed request"
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def guarded_connections(
    server: web.Server, client_timeout: float, timed_out: TimedOut, **options: Any
) -> Callable[[], GuardedRequestHandler]:
    """The protocol factory to listen with: ``server``'s connections (its handler, request
    factory, shutdown) as GuardedRequestHandlers; ``options`` go to aiohttp's RequestHandler.

    ``server.request_factory``, the public attribute each connection calls with a parsed head,
    is wrapped to tell the connection its head arrived: aiohttp has no other signal for it."""
    make_request: RequestFactory = server.request_factory

    def request_factory(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: "asyncio.Task[None]",
    ) -> web.BaseRequest:
        if isinstance(protocol, GuardedRequestHandler):
            protocol.head_received(payload)
        return make_request(message, payload, protocol, writer, task)

    server.request_factory = request_factory
    loop = asyncio.get_running_loop()

    def connection() -> GuardedRequestHandler:
        return GuardedRequestHandler(
            server, loop=loop, client_timeout=client_timeout, timed_out=timed_out, **options
        )

    return connection
