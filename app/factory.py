"""create_app: the root application, with the requested sub-apps at fixed prefixes."""

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from app.backends import open_backends
from app.bot import Responder, RuleBasedResponder
from app.keys import BACKENDS, RESPONDER, SETTINGS, STREAMS
from app.middlewares import error_middleware, shield_middleware
from app.settings import Settings
from app.streams import StreamRegistry
from handlers.chatbot import create_chatbot_app
from handlers.workbench import create_workbench_app

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024

SUBAPPS = {"chatbot": create_chatbot_app, "workbench": create_workbench_app}


def create_app(settings: Settings, responder: Responder | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, shield_middleware], client_max_size=MAX_BODY
    )
    app[SETTINGS] = settings
    app[STREAMS] = StreamRegistry()
    app[RESPONDER] = responder if responder is not None else RuleBasedResponder()
    app.cleanup_ctx.append(_backends_ctx)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/health", health)
    for component in settings.components:
        app.add_subapp(f"/{component}", SUBAPPS[component]())
    return app


async def _backends_ctx(app: web.Application) -> AsyncIterator[None]:
    backends = await open_backends(app[SETTINGS])
    app[BACKENDS] = backends
    yield
    await backends.close()


async def _end_streams(app: web.Application) -> None:
    await app[STREAMS].close_all()


async def health(request: web.Request) -> web.Response:
    app = request.app
    backends = app[BACKENDS]
    return web.json_response(
        {
            "status": "degraded" if backends.degraded else "ok",
            "broker": backends.broker.name,
            "degraded": backends.degraded,
            "components": list(app[SETTINGS].components),
            "streams": len(app[STREAMS]),
        }
    )
