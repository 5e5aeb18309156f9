"""Serving the app on its port until SIGTERM or SIGINT: what ``web.run_app`` does, with the
connections of app.web.connections (a deadline for slow clients, JSON for unparseable requests).

``run_app`` offers no way to choose the connection class, so the listening socket is made here
with that protocol factory, around an ``AppRunner`` that runs the app's start-up, its signal
handlers and its graceful shutdown exactly as ``run_app`` sets them up.
"""

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from app.keys import SETTINGS, TIMED_OUT
from app.web.connections import guarded_connections

logger = logging.getLogger(__name__)

# Streams are ended in on_shutdown; a request still running then has this long to finish, and
# as long again once aiohttp has asked it to (it waits twice), then is cancelled: 6 s at most
# from SIGTERM to exit, within the 10 s that a --workers supervisor (and systemd's unit,
# and the suite) allow. Under 5 s, as aiohttp rounds a longer one up to a whole second.
SHUTDOWN_TIMEOUT = 3.0
# A stop still going after this long logs what it waits on: a supervisor (systemd, Kubernetes)
# kills a process that does not exit in time, and its log should say why it did not.
SLOW_STOP = 2.0
# aiohttp's own limit on an idle keep-alive connection, as run_app sets it; client_timeout,
# 30 s by default, closes one sooner.
KEEPALIVE_TIMEOUT = 75.0
BACKLOG = 128


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    loop: asyncio.AbstractEventLoop,
    reuse_port: bool | None = None,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``loop`` until a stop signal, then shut down and close the loop.
    ``on_listening`` is called once the port listens (a supervised worker says so)."""
    main = loop.create_task(_serve(app, host, port, reuse_port, on_listening))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        stopping = time.monotonic()
        slow = watch_stop(loop)
        try:
            if not main.done():
                main.cancel()  # its finally shuts the app down gracefully
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_remaining_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            slow.cancel()
            loop.close()
            logger.info("stopped in %.1f s", time.monotonic() - stopping)


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    reuse_port: bool | None,
    on_listening: Callable[[], None] | None,
) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=True,
        # Cancel a handler as soon as its client disconnects: an SSE stream releases its
        # subscription at once instead of at its next failed write. Actions are shielded.
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()  # the app's start-up: a failure here ends the process
    try:
        assert runner.server is not None  # set by setup()
        connection = guarded_connections(
            runner.server,
            app[SETTINGS].client_timeout,
            app[TIMED_OUT],
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            access_log=None,  # the request middleware logs each request
        )
        listener = await asyncio.get_running_loop().create_server(
            connection, host, port, backlog=BACKLOG, reuse_port=reuse_port
        )
        try:
            if on_listening is not None:
                on_listening()
            await asyncio.get_running_loop().create_future()  # until cancelled by a stop
        finally:
            listener.close()  # no new connections; open ones end in runner.cleanup()
    finally:
        await runner.cleanup()


def watch_stop(loop: asyncio.AbstractEventLoop) -> asyncio.TimerHandle:
    """From now on, a stop still going after SLOW_STOP logs what it waits on; cancel the
    handle once stopped."""
    return loop.call_later(SLOW_STOP, _log_slow_stop, loop, time.monotonic())


def _log_slow_stop(loop: asyncio.AbstractEventLoop, since: float) -> None:
    """Each task the stop still waits on, with where it waits."""
    waiting = io.StringIO()
    for task in asyncio.all_tasks(loop):
        task.print_stack(limit=8, file=waiting)
    logger.warning(
        "still stopping after %.1f s; waiting on:\n%s", time.monotonic() - since, waiting.getvalue()
    )


def _cancel_remaining_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """As ``run_app`` ends: cancel what is left, wait for it, report what failed."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            context: dict[str, Any] = {
                "message": "unhandled exception while stopping",
                "exception": task.exception(),
                "task": task,
            }
            loop.call_exception_handler(context)
