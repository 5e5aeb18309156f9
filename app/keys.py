"""Every object shared through an aiohttp app, as a typed AppKey, in one place."""

from aiohttp import web

from app.auth import TokenAuthority
from app.backends import Backends
from app.limits import RateLimiter
from app.metrics import Metrics
from app.bot import Responder
from app.settings import Settings
from app.streams import StreamRegistry

SETTINGS = web.AppKey("settings", Settings)
BACKENDS = web.AppKey("backends", Backends)
STREAMS = web.AppKey("streams", StreamRegistry)
RESPONDER = web.AppKey("responder", Responder)
# Set only when tokens are required (not under --insecure).
TOKENS = web.AppKey("tokens", TokenAuthority)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
# This process's private channel for the readiness canary.
CANARY = web.AppKey("canary", str)
# Set on each sub-app: the envelope "source" of everything that sub-app publishes.
SOURCE = web.AppKey("source", str)
# Set on each sub-app: "chatbot" or "workbench", for counting its streams.
COMPONENT = web.AppKey("component", str)
METRICS = web.AppKey("metrics", Metrics)
# Set by an event stream when it ends: (its status, True), for the request's log line.
SENT = web.RequestKey("sent", tuple)
