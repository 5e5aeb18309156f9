"""create_app: the root application, with the requested sub-apps at fixed prefixes."""

import asyncio
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from app.backends import Backends, open_backends
from app.bots.choose import make_bot, newest_messages
from app.bots.guard import BotLimits, BotMetrics, GuardedResponder
from app.domain.auth import TokenAuthority
from app.domain.bot import Responder, Transcripts
from app.domain.rating import RatingMetrics
from app.domain.retention import Sweeper
from app.domain.routing.metrics import RoutingMetrics
from app.domain.store import Message
from app.keys import (
    AGENT_STREAMS,
    AGENTS,
    BACKENDS,
    BOT_METRICS,
    CANARY,
    CUSTOMERS_ACTIVE,
    METRICS,
    RATE_LIMITER,
    RATING_METRICS,
    RESPONDER,
    ROUTING_METRICS,
    SETTINGS,
    START_LIMITER,
    STARTS_REFUSED,
    STREAMS,
    SWEEPER,
    TIMED_OUT,
    TOKENS,
    TRUSTED_PROXIES,
    WEBHOOK_METRICS,
)
from app.process.rounds import stop
from app.process.settings import Settings
from app.process.workers import WorkerRole
from app.web.answers import json_answer
from app.web.client_address import trusted_networks
from app.web.connections import TimedOut
from app.web.limits import MAX_BODY, READY_TIMEOUT, RateLimiter, StartRefusals
from app.web.metrics import Metrics
from app.web.middlewares import request_middleware
from app.web.openapi import setup_openapi
from app.web.security import add_security_headers, allow_origins
from app.webhooks.delivery import WebhookDelivery, WebhookLimits, WebhookMetrics
from app.webhooks.events import WEBHOOK_QUEUE
from handlers.agents import OpenAgentStreams, watch_presence
from handlers.chatbot import create_chatbot_app
from handlers.queue_watch import watch_queue
from handlers.routing import route, watch_customers
from handlers.session_watch import watch_sessions
from handlers.sse import StreamRegistry, send_heartbeats
from handlers.workbench import create_workbench_app
from realtime.channels import canary_channel

logger = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).parent / "static"

SUBAPPS = {"chatbot": create_chatbot_app, "workbench": create_workbench_app}


BackendsFactory = Callable[[Settings], Awaitable[Backends]]


def create_app(
    settings: Settings,
    responder: Responder | None = None,
    backends_factory: BackendsFactory = open_backends,
) -> web.Application:
    """The root app. Raises ValueError without a token secret unless ``settings.insecure``:
    a process that anybody could drive must be asked for, not fallen into.

    ``backends_factory`` opens the broker and store (the benchmark passes its baseline)."""
    if settings.secret is None and not settings.insecure:
        raise ValueError(
            "refusing to start without a token secret: set SWITCHBOARD_SECRET or --secret "
            "(32+ characters), or pass --insecure for local development"
        )
    app = web.Application(middlewares=[request_middleware], client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    if settings.secret is not None and not settings.insecure:
        app[TOKENS] = TokenAuthority(settings.secret)
    else:
        logger.warning("running with --insecure: no authentication, anybody can act as anybody")
    app[RATE_LIMITER] = RateLimiter(settings.rate_limit, settings.rate_burst)
    # --start-rate per minute per client address, in bursts of as many.
    app[START_LIMITER] = RateLimiter(settings.start_rate / 60, settings.start_rate)
    app[TRUSTED_PROXIES] = trusted_networks(settings.trusted_proxies)
    app[STARTS_REFUSED] = StartRefusals()
    app[STREAMS] = StreamRegistry()
    app[METRICS] = Metrics()
    app[TIMED_OUT] = TimedOut()  # counted by the connections app.process.serving listens with
    app[METRICS].watch_connections(app[TIMED_OUT])
    app[METRICS].count_refusals(app[STARTS_REFUSED])
    app[BOT_METRICS] = BotMetrics(app[METRICS].registry)
    bot = responder if responder is not None else make_bot(settings, _transcripts(app))
    app[RESPONDER] = GuardedResponder(bot, _bot_limits(settings), app[BOT_METRICS])
    app.on_cleanup.append(_close_bot)
    app.cleanup_ctx.append(functools.partial(_backends_ctx, backends_factory))
    app.cleanup_ctx.append(_background("heartbeats", _heartbeats))
    app.cleanup_ctx.append(_background("sweeper", _sweeper))
    app.cleanup_ctx.append(_background("session-watch", _session_watch))
    app[AGENT_STREAMS] = OpenAgentStreams()
    app[ROUTING_METRICS] = RoutingMetrics(app[METRICS].registry)
    app[RATING_METRICS] = RatingMetrics(app[METRICS].registry)
    app[CUSTOMERS_ACTIVE] = set()
    if "workbench" in settings.components:
        app.cleanup_ctx.append(_background("agent-presence", _agent_presence))
        app.cleanup_ctx.append(_background("router", route))
    if "chatbot" in settings.components:
        app.cleanup_ctx.append(_background("queue-watch", watch_queue))
        if settings.customer_idle:
            app.cleanup_ctx.append(_background("customer-presence", watch_customers))
    if settings.webhook_urls:
        app[WEBHOOK_METRICS] = WebhookMetrics(app[METRICS].registry)
        app.cleanup_ctx.append(_background("webhooks", _deliver_webhooks))
    app.on_shutdown.append(_end_streams)
    app[CANARY] = secrets.token_hex(8)
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    setup_openapi(app)  # GET /openapi.json: the document of the sub-apps this process runs
    # The browser console: static files, no build step; "/" opens it.
    app.router.add_static("/console/", CONSOLE_DIR, name="console")
    app.router.add_get("/", console_index)
    app.on_response_prepare.append(add_security_headers)
    for component in settings.components:
        subapp = SUBAPPS[component]()
        allow_origins(subapp, settings.cors_origins)
        app.add_subapp(f"/{component}", subapp)
    return app


def _bot_limits(settings: Settings) -> BotLimits:
    return BotLimits(
        first_token=settings.bot_first_token_timeout,
        whole=settings.bot_timeout,
        failures=settings.bot_breaker_failures,
        cooldown=settings.bot_breaker_cooldown,
    )


def _transcripts(app: web.Application) -> Transcripts:
    """How the bot reads a conversation: through the store the app opens at start."""

    async def newest(session_name: str, count: int) -> list[Message]:
        return await newest_messages(app[BACKENDS].store, session_name, count)

    return newest


async def _close_bot(app: web.Application) -> None:
    await app[RESPONDER].close()


async def _backends_ctx(backends_factory: BackendsFactory, app: web.Application) -> AsyncIterator[None]:
    backends = await backends_factory(app[SETTINGS])
    app[BACKENDS] = backends
    app[AGENTS] = backends.agents
    app[METRICS].watch(app[STREAMS], backends, app[SETTINGS].components)
    yield
    await backends.close()


def _background(
    name: str, job: Callable[[web.Application], Coroutine[Any, Any, None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running ``job(app)`` as a task while the app serves."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(job(app), name=name)
        yield
        await stop(task)

    return context


def _heartbeats(app: web.Application) -> Coroutine[Any, Any, None]:
    return send_heartbeats(app[STREAMS], app[SETTINGS].heartbeat)


def _sweeper(app: web.Application) -> Coroutine[Any, Any, None]:
    backends = app[BACKENDS]
    sweeper = Sweeper(backends.store, app[SETTINGS].bounds, webhooks=bool(app[SETTINGS].webhook_urls))
    app[SWEEPER] = sweeper
    app[METRICS].watch_sweeper(sweeper.stats)
    return sweeper.run()


async def _deliver_webhooks(app: web.Application) -> None:
    """A delivery per --webhook-url, from the queue the store writes (app.webhooks)."""
    settings, backends = app[SETTINGS], app[BACKENDS]
    queue = backends.broker.delivery_queue(WEBHOOK_QUEUE)
    role = WorkerRole.from_env()
    # The same name after a restart: the process resumes what it was delivering at once.
    consumer = f"{socket.gethostname()}:{settings.port}:{role.index if role is not None else 0}"
    limits = WebhookLimits(settings.webhook_attempts, settings.webhook_timeout, settings.webhook_max_backoff)
    async with asyncio.TaskGroup() as deliveries:
        for url in settings.webhook_urls:
            delivery = WebhookDelivery(
                url, settings.webhook_secret, queue, backends.store, consumer, app[WEBHOOK_METRICS], limits
            )
            deliveries.create_task(delivery.run(), name=f"webhook {delivery.group}")


def _agent_presence(app: web.Application) -> Coroutine[Any, Any, None]:
    return watch_presence(app, app[AGENT_STREAMS])


def _session_watch(app: web.Application) -> Coroutine[Any, Any, None]:
    """Streams of sessions that are gone end within a heartbeat."""
    return watch_sessions(app[STREAMS], app[BACKENDS].store, app[SETTINGS].heartbeat)


async def _end_streams(app: web.Application) -> None:
    app[STREAMS].close_all()


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (protect it at the proxy: it is for the scraper, not clients)."""
    body, content_type = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def console_index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/index.html")


async def health(request: web.Request) -> web.Response:
    """Liveness and mode: always 200 while the process serves."""
    app = request.app
    backends = app[BACKENDS]
    return json_answer(
        {
            "status": "degraded" if backends.degraded else "ok",
            "broker": backends.mode,
            "degraded": backends.degraded,
            "components": list(app[SETTINGS].components),
            "streams": len(app[STREAMS]),
            "insecure": TOKENS not in app,
            "pid": os.getpid(),
        }
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness: a canary published through the broker comes back to this process in time.

    It catches what /health cannot see: a pub/sub connection that is dead without an error.
    """
    backends = request.app[BACKENDS]
    started = time.monotonic()
    delivered = await backends.broker.probe(canary_channel(request.app[CANARY]), timeout=READY_TIMEOUT)
    body = {
        "ready": delivered,
        "broker": backends.mode,
        "degraded": backends.degraded,
        "canary_ms": round((time.monotonic() - started) * 1000, 1),
    }
    if delivered:
        return json_answer(body)
    return json_answer(body, status=503, headers={"Retry-After": "5"})
