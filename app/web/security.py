"""Browser-facing protections: security headers on every response, and CORS, closed unless
origins are configured."""

from collections.abc import Sequence

import aiohttp_cors
from aiohttp import web

from app.process.logs import request_id
from app.web.middlewares import REQUEST_ID_HEADER

# What a cross-origin page may send: the bearer token, JSON bodies, and the resume position.
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID")
# On every response: no MIME sniffing, no referrer, and never cached.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CONSOLE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: no MIME sniffing anywhere; API answers are never cached (SSE
    responses already say ``no-cache``, which aiohttp-sse sets); the request id goes back to
    the client."""
    response.headers.setdefault(REQUEST_ID_HEADER, request_id.get())
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/console/"):
        # The console's own files only: no inline script, no other origin, no framing.
        response.headers.setdefault("Content-Security-Policy", CONSOLE_POLICY)


def allow_origins(app: web.Application, origins: Sequence[str]) -> None:
    """Let pages from ``origins`` call every route of ``app`` (before it is mounted); with no
    origins, CORS stays closed and browsers refuse cross-origin calls."""
    if not origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]  # aiohttp-cors has no hints
        allow_credentials=False,  # tokens travel in Authorization or ?token=, never cookies
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=("Retry-After", "X-Request-ID"),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        cors.add(route)
