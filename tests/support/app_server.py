"""The in-process test server, run as production runs the app: ``app.process.serving`` passes
``handler_cancellation=True`` to its ``AppRunner``, so a handler whose client leaves is
cancelled. aiohttp 3.14's TestServer does the same by itself (its start_server passes it);
``cancels_handlers`` lets the fixtures check that it still does. Its connections are
aiohttp's own: the client deadline and the JSON refusals of app.web.connections are tested
against run.py processes (tests/test_hostile_clients.py)."""

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias

from aiohttp import web
from aiohttp.test_utils import TestClient

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
