"""``python -m bench.serve [--baseline] [run.py flags]``: the server, or the server on the
original design's broker (one Redis pub/sub connection per stream), for the benchmark."""

import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from app.backends import Backends, redis_broker_options, redis_client, redis_store
from app.factory import create_app
from app.process.settings import Settings, load_settings
from bench.baseline_broker import PerStreamRedisBroker
from run import new_event_loop

logger = logging.getLogger(__name__)


async def open_baseline_backends(settings: Settings) -> Backends:
    redis = redis_client(settings)
    broker = PerStreamRedisBroker(redis, subscriber_url=settings.redis_url, **redis_broker_options(settings))
    if not await broker.start(wait=settings.redis_timeout):
        raise RuntimeError("the baseline needs Redis")
    return Backends(broker, redis_store(redis, settings, broker), redis)


def main(argv: Sequence[str]) -> None:
    baseline = "--baseline" in argv
    settings = load_settings([a for a in argv if a != "--baseline"])
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    factory = open_baseline_backends if baseline else None
    app = create_app(settings, backends_factory=factory) if factory else create_app(settings)
    logger.info(
        "benchmark server (%s) on port %d, event loop %s",
        "baseline" if baseline else "switchboard",
        settings.port,
        settings.event_loop,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        handler_cancellation=True,
        shutdown_timeout=5.0,
        print=None,
        access_log=None,
        loop=new_event_loop(settings.event_loop),  # SWITCHBOARD_EVENT_LOOP=uvloop to compare
    )


if __name__ == "__main__":
    main(sys.argv[1:])
