"""Command line: ``python run.py [--chatbot] [--workbench] [--port N] ...`` (neither = both)."""

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from app.domain.auth import Kind, TokenAuthority
from app.factory import create_app
from app.process.logs import configure_logging
from app.process.serving import serve
from app.process.settings import Settings, build_parser, load_settings
from app.process.workers import WorkerRole, WorkerSupervisor, die_with_parent, port_in_use

AGENT_TOKEN_TTL = 8 * 3600.0  # a shift
# Allocations between young collections, and young (then middle) collections between older
# ones; Python's defaults are (700, 10, 10). See freeze_startup_objects.
GC_THRESHOLDS = (50_000, 20, 100)
UVLOOP_MISSING = "--event-loop uvloop needs uvloop, which is not installed: pip install '.[uvloop]'"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["token"]:
        sys.exit(mint_token(args[1:]))
    parser = build_parser()
    try:
        settings = load_settings(args)
    except ValueError as exc:
        parser.error(str(exc))  # exit status 2, with the usage line
    role = WorkerRole.from_env()
    if role is not None:
        die_with_parent(role.supervisor_pid)
    configure_logging(
        settings.log_level,
        settings.log_format,
        prefix="" if role is None else f"[worker {role.index}] ",
    )
    logger = logging.getLogger(__name__)
    try:
        loop = new_event_loop(settings.event_loop)
    except ImportError:
        logger.error("%s", UVLOOP_MISSING)
        sys.exit(2)
    if settings.workers > 1:
        loop.close()
        sys.exit(supervise(settings, args, logger))
    try:
        app = create_app(settings)
    except ValueError as exc:
        loop.close()
        logger.error("%s", exc)
        sys.exit(2)
    app.on_startup.append(freeze_startup_objects)
    logger.info(
        "serving %s on http://%s:%d (event loop: %s)",
        "+".join(settings.components),
        settings.host,
        settings.port,
        type(loop).__module__.partition(".")[0],
    )
    serve(
        app,
        host=settings.host,
        port=settings.port,
        loop=loop,
        # A supervised worker shares the port with its siblings and says when it listens.
        reuse_port=True if role is not None else None,
        on_listening=role.announce_ready if role is not None else None,
    )


async def freeze_startup_objects(app: web.Application) -> None:
    """Move everything alive after start-up (modules, routes, clients) out of the collector's
    sight: a full collection then scans only what streams and requests made, which keeps its
    pauses short at thousands of open streams (see docs/benchmarks.md, profile). A process
    matter, so it is done here, after the app's own start-up, and not by the app factory.

    Then collect less often (GC_THRESHOLDS): with thousands of streams open a full collection
    walks every object they hold and stops the event loop for hundreds of milliseconds, and
    what triggers one is the objects of requests in flight that each young collection finds
    alive and promotes. Rarer young collections promote far fewer of them. Garbage without
    cycles is freed at once either way; only cyclic garbage waits longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """The loop ``--event-loop`` asks for; ImportError if uvloop is asked for but missing."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def supervise(settings: Settings, args: list[str], logger: logging.Logger) -> int:
    """``--workers N``: this process only supervises N copies of itself on the same port."""
    if settings.port == 0:
        logger.error("--workers needs a fixed --port: each worker would pick its own with 0")
        return 2
    problem = port_in_use(settings.host, settings.port)
    if problem is not None:
        logger.error("%s", problem)
        return 1
    logger.info(
        "supervising %d workers serving %s on http://%s:%d",
        settings.workers,
        "+".join(settings.components),
        settings.host,
        settings.port,
    )
    command = [sys.executable, str(Path(__file__).resolve()), *args, "--workers", "1"]
    return WorkerSupervisor(command, settings.workers).run()


def mint_token(argv: Sequence[str]) -> int:
    """``run.py token --agent ID | --supervisor ID | --session NAME [--incarnation ID] [--ttl S]
    [--secret S]``: print a token."""
    parser = argparse.ArgumentParser(prog="switchboard token", description=mint_token.__doc__)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", metavar="AGENT_ID")
    who.add_argument("--supervisor", metavar="AGENT_ID", help="an agent with a supervisor's rights")
    who.add_argument("--session", metavar="SESSION_NAME")
    parser.add_argument(
        "--incarnation",
        metavar="ID",
        help="a session token for this conversation only (its session's `incarnation`); "
        "without it the token speaks for whatever conversation holds the name",
    )
    parser.add_argument("--ttl", type=float, help="lifetime in seconds [agent 28800, session 7200]")
    parser.add_argument("--secret", help="[SWITCHBOARD_SECRET]")
    args = parser.parse_args(argv)
    secret = args.secret or os.environ.get("SWITCHBOARD_SECRET")
    if not secret:
        parser.error("no secret: pass --secret or set SWITCHBOARD_SECRET")
    kind: Kind = "agent" if args.agent else "supervisor" if args.supervisor else "session"
    if args.incarnation is not None and kind != "session":
        parser.error("--incarnation belongs to a --session token")
    default_ttl = AGENT_TOKEN_TTL if kind != "session" else Settings().session_token_ttl
    ttl = default_ttl if args.ttl is None else args.ttl
    if ttl < 1:
        parser.error("--ttl must be at least 1 second")
    try:
        token = TokenAuthority(secret).mint(
            kind, args.agent or args.supervisor or args.session, ttl, incarnation=args.incarnation
        )
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    main()
