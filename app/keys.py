"""Every object shared through an aiohttp app, as a typed AppKey, in one place.

A leaf: the types are imported for the type checker only, so any module may import the keys
without importing what they hold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from app.backends import Backends
    from app.bots.guard import BotMetrics, GuardedResponder
    from app.domain.agents import AgentRegistry
    from app.domain.auth import TokenAuthority
    from app.domain.rating import RatingMetrics
    from app.domain.retention import Sweeper
    from app.domain.routing.metrics import RoutingMetrics
    from app.process.settings import Settings
    from app.web.client_address import Network
    from app.web.connections import TimedOut
    from app.web.limits import RateLimiter, StartRefusals
    from app.web.metrics import Metrics
    from app.webhooks.delivery import WebhookMetrics
    from handlers.agents import OpenAgentStreams
    from handlers.sse import StreamRegistry

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
BACKENDS: web.AppKey[Backends] = web.AppKey("backends")
STREAMS: web.AppKey[StreamRegistry] = web.AppKey("streams")
# The bot, read through its limits (app.bots.guard), and its metrics.
RESPONDER: web.AppKey[GuardedResponder] = web.AppKey("responder")
BOT_METRICS: web.AppKey[BotMetrics] = web.AppKey("bot_metrics")
AGENTS: web.AppKey[AgentRegistry] = web.AppKey("agents")
# The agent streams this process has open, by agent (its part of the agents' presence).
AGENT_STREAMS: web.AppKey[OpenAgentStreams] = web.AppKey("agent_streams")
ROUTING_METRICS: web.AppKey[RoutingMetrics] = web.AppKey("routing_metrics")
# The satisfaction ratings this process accepted (app.domain.rating).
RATING_METRICS: web.AppKey[RatingMetrics] = web.AppKey("rating_metrics")
# Conversations whose customers were active here since the last customer presence report.
CUSTOMERS_ACTIVE: web.AppKey[set[str]] = web.AppKey("customers_active")
WEBHOOK_METRICS: web.AppKey[WebhookMetrics] = web.AppKey("webhook_metrics")
# Set only when tokens are required (not under --insecure).
TOKENS: web.AppKey[TokenAuthority] = web.AppKey("tokens")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
# Conversation starts and escalations, per client address (app.web.client_address), and the
# proxies whose X-Forwarded-For names that address.
START_LIMITER: web.AppKey[RateLimiter] = web.AppKey("start_limiter")
TRUSTED_PROXIES: web.AppKey[tuple[Network, ...]] = web.AppKey("trusted_proxies")
STARTS_REFUSED: web.AppKey[StartRefusals] = web.AppKey("starts_refused")
# This process's private channel for the readiness canary.
CANARY: web.AppKey[str] = web.AppKey("canary")
# Set on each sub-app: the envelope "source" of everything that sub-app publishes.
SOURCE: web.AppKey[str] = web.AppKey("source")
# Set on each sub-app: "chatbot" or "workbench", for counting its streams.
COMPONENT: web.AppKey[str] = web.AppKey("component")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# Connections closed for a client too slow to send its request (app.web.connections).
TIMED_OUT: web.AppKey[TimedOut] = web.AppKey("timed_out")
# Set by an event stream when it ends: (its status, True), for the request's log line.
SENT: web.RequestKey[tuple[int, bool]] = web.RequestKey("sent")
# The retention sweeper of this process (set once the backends are open).
SWEEPER: web.AppKey[Sweeper] = web.AppKey("sweeper")
