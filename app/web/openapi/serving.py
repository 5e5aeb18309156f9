"""Serving the document at ``GET /openapi.json``: built at the first request, when the routes
are final, then answered from memory."""

import json

from aiohttp import web

from app.web.openapi.builder import spec_for_app
from app.web.openapi.operations import OPENAPI_PATH


class OpenApiDocument:
    """The rendered document of one app, made at the first request (the routes are final
    by then) and kept: the app is frozen once it runs, so this holder is set before."""

    __slots__ = ("body",)

    def __init__(self) -> None:
        self.body: bytes | None = None


OPENAPI_DOCUMENT = web.AppKey("openapi_document", OpenApiDocument)


def setup_openapi(app: web.Application) -> None:
    """Serve ``GET /openapi.json`` from the root app (call it in create_app)."""
    app[OPENAPI_DOCUMENT] = OpenApiDocument()
    app.router.add_get(OPENAPI_PATH, openapi_json)


def _render(app: web.Application) -> bytes:
    return json.dumps(spec_for_app(app), ensure_ascii=False).encode()


async def openapi_json(request: web.Request) -> web.Response:
    """The document of the process answering (built once per app, then from memory)."""
    app = request.app
    holder = app.get(OPENAPI_DOCUMENT)
    if holder is None:  # routed without setup_openapi: nowhere to keep it
        body = _render(app)
    else:
        if holder.body is None:
            holder.body = _render(app)
        body = holder.body
    return web.Response(body=body, content_type="application/json")
