"""Command line: ``python run.py [--chatbot] [--workbench] [--port N] ...`` (neither = both)."""

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from app.auth import TokenAuthority
from app.factory import create_app
from app.settings import Settings, build_parser, load_settings

AGENT_TOKEN_TTL = 8 * 3600.0  # a shift


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["token"]:
        sys.exit(mint_token(args[1:]))
    parser = build_parser()
    try:
        settings = load_settings(args)
    except ValueError as exc:
        parser.error(str(exc))  # exit status 2, with the usage line
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger = logging.getLogger(__name__)
    try:
        app = create_app(settings)
    except ValueError as exc:
        logger.error("%s", exc)
        sys.exit(2)
    logger.info(
        "serving %s on http://%s:%d", "+".join(settings.components), settings.host, settings.port
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        # Cancel a handler as soon as its client disconnects: an SSE stream releases its
        # subscription at once instead of at its next failed write. Actions are shielded.
        handler_cancellation=True,
        shutdown_timeout=5.0,
        print=None,
        access_log=None,
    )


def mint_token(argv: Sequence[str]) -> int:
    """``run.py token --agent ID | --session NAME [--ttl S] [--secret S]``: print a token."""
    parser = argparse.ArgumentParser(prog="switchboard token", description=mint_token.__doc__)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", metavar="AGENT_ID")
    who.add_argument("--session", metavar="SESSION_NAME")
    parser.add_argument("--ttl", type=float, help="lifetime in seconds [agent 28800, session 7200]")
    parser.add_argument("--secret", help="[SWITCHBOARD_SECRET]")
    args = parser.parse_args(argv)
    secret = args.secret or os.environ.get("SWITCHBOARD_SECRET")
    if not secret:
        parser.error("no secret: pass --secret or set SWITCHBOARD_SECRET")
    kind = "agent" if args.agent else "session"
    default_ttl = AGENT_TOKEN_TTL if kind == "agent" else Settings().session_token_ttl
    ttl = default_ttl if args.ttl is None else args.ttl
    if ttl < 1:
        parser.error("--ttl must be at least 1 second")
    try:
        token = TokenAuthority(secret).mint(kind, args.agent or args.session, ttl)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    main()
