"""The in-process test server, run as production runs the app: ``app.process.serving`` passes
``handler_cancellation=True`` to its ``AppRunner``, so a handler whose client leaves is
cancelled. aiohttp 3.14's TestServer does the same by itself (its start_server passes it);
``cancels_handlers`` lets the fixtures check that it still does. Its connections are
aiohttp's own: the client deadline and the JSON refusals of app.web.connections are tested
against run.py processes (tests/test_hostile_clients.py).

Its shutdown is production's too: a request still running when a test ends is cut after
``SHUTDOWN_TIMEOUT`` twice (6 s), not aiohttp's default 60 s twice, and a stop that takes
longer than run.py's ``SLOW_STOP`` logs every task's stack, so a test that hangs in its teardown says
on what."""

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeAlias

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.process.serving import SHUTDOWN_TIMEOUT, watch_stop
from app.process.settings import Settings

# A client of the app behind a TestServer: its requests are web.Requests, its ``app`` the app.
AppClient: TypeAlias = TestClient[web.Request, web.Application]

# conftest's ``serve_app``: ``await serve_app(app)``.
ServeApp: TypeAlias = Callable[[web.Application], Awaitable[AppClient]]


class MakeClient(Protocol):
    """conftest's ``make_client``: ``await make_client(settings, **changes)``, the changes
    being Settings fields."""

    def __call__(self, settings: Settings, **changes: Any) -> Awaitable[AppClient]: ...


def cancels_handlers(client: AppClient) -> bool:
    """Whether the started server behind ``client`` cancels a handler whose client leaves."""
    runner = client.server.runner
    server = runner.server if runner is not None else None
    return server is not None and server.handler_cancellation


async def started_client(app: web.Application) -> AppClient:
    """A client of ``app`` behind a started TestServer that stops as run.py's server does."""
    server = TestServer(app)
    await server.start_server(shutdown_timeout=SHUTDOWN_TIMEOUT)
    client: AppClient = TestClient(server)
    await client.start_server()
    return client


async def close_watched(clients: Iterable[AppClient]) -> None:
    """Close ``clients`` and their servers, logging what a slow stop waits on."""
    slow = watch_stop(asyncio.get_running_loop())
    try:
        for client in clients:
            await client.close()
    finally:
        slow.cancel()
