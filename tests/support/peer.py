"""What the small HTTP services tests run as real processes share (tests/support/openai_wire.py,
tests/support/webhook_receiver.py): a ``--port`` on loopback and ``GET /health``."""

import argparse

from aiohttp import web


def parser(description: str) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--port", type=int, required=True)
    return arguments


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def serve(app: web.Application, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port``, with the /health that PeerProcess waits for."""
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None)
