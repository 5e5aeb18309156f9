"""Command line: ``python run.py [--chatbot] [--workbench] [--port N] ...`` (neither = both)."""

import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from app.factory import create_app
from app.settings import load_settings


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger(__name__).info(
        "serving %s on http://%s:%d", "+".join(settings.components), settings.host, settings.port
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # Cancel a handler as soon as its client disconnects: an SSE stream releases its
        # subscription at once instead of at its next failed write. Actions are shielded.
        handler_cancellation=True,
        shutdown_timeout=5.0,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
