"""What stands between a bot and the chat: timeouts, a circuit breaker and the bot's metrics.

Whatever bot answers (--bot rules|openai|webhook, or one given to create_app), the chat reads
its answer through ``GuardedResponder``, which turns every way of failing into a
``BotFailure`` with a kind: the chat then hands the conversation to a person (docs/bots.md,
"When the bot fails"). Timeouts: the first text piece within ``first_token``, the whole answer
within ``whole`` (the connect timeout is the bot's own, on its HTTP client). The breaker stops
calling a bot that keeps failing: ``failures`` failures within ``window`` seconds open it for
``cooldown`` seconds, after which one call is let through (half-open): its success closes the
breaker, its failure opens it again.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.domain.bot import BotFailure, Handoff, ReplyPart, Usage, stream_of
from app.domain.store import Message, Session

logger = logging.getLogger(__name__)

BOT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0)
CIRCUIT_STATES = ("closed", "open", "half_open")


@dataclass(frozen=True, slots=True)
class BotLimits:
    first_token: float = 15.0
    whole: float = 60.0
    failures: int = 5
    window: float = 30.0
    cooldown: float = 30.0


class BotMetrics:
    """The bot's Prometheus metrics, in the process's registry (app.web.metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.first_token = Histogram(
            "switchboard_bot_first_token_seconds",
            "Time from asking the bot to its first text piece.",
            buckets=BOT_BUCKETS,
            registry=registry,
        )
        self.reply = Histogram(
            "switchboard_bot_reply_seconds",
            "Time from asking the bot to its complete answer.",
            buckets=BOT_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "switchboard_bot_errors", "Bot answers that failed, by kind.", ("kind",), registry=registry
        )
        self.circuit = Gauge(
            "switchboard_bot_circuit",
            "The bot's circuit breaker: 1 for its state now.",
            ("state",),
            registry=registry,
        )
        self.tokens = Counter(
            "switchboard_bot_tokens",
            "Tokens the bot's endpoint reported, by kind.",
            ("kind",),
            registry=registry,
        )
        self.handoffs = Counter(
            "switchboard_handoffs",
            "Conversations handed to a person, by why: bot (the bot decided), bot_unavailable "
            "(the bot failed), requested (POST /chatbot/api/manual/escalate).",
            ("reason",),
            registry=registry,
        )
        self.cancelled = Counter(
            "switchboard_bot_replies_cancelled",
            "Bot replies stopped because the conversation changed hands meanwhile.",
            registry=registry,
        )
        self.show_circuit("closed")

    def show_circuit(self, state: str) -> None:
        for name in CIRCUIT_STATES:
            self.circuit.labels(name).set(1 if name == state else 0)


class CircuitBreaker:
    def __init__(self, limits: BotLimits, metrics: BotMetrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self._failures: deque[float] = deque()
        self._open_until = 0.0
        self.state = "closed"

    def allow(self) -> bool:
        """Whether to call the bot now (half-open: this one call only, until it ends)."""
        if self.state == "closed":
            return True
        if self.state == "open" and time.monotonic() >= self._open_until:
            self._move("half_open")
            return True
        return False

    def succeeded(self) -> None:
        self._failures.clear()
        if self.state != "closed":
            self._move("closed")

    def failed(self) -> None:
        now = time.monotonic()
        if self.state == "half_open":
            self._open(now)
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self._limits.window:
            self._failures.popleft()
        if len(self._failures) >= self._limits.failures:
            self._open(now)

    def abandoned(self) -> None:
        """The call ended without a verdict (the reply was cancelled, its client left): a
        half-open breaker lets the next call try instead."""
        if self.state == "half_open":
            self._open_until = time.monotonic()
            self._move("open")

    def _open(self, now: float) -> None:
        self._failures.clear()
        self._open_until = now + self._limits.cooldown
        self._move("open")

    def _move(self, state: str) -> None:
        logger.warning("bot circuit breaker: %s -> %s", self.state, state)
        self.state = state
        self._metrics.show_circuit(state)


class GuardedResponder:
    """A bot read through the limits: its parts, or a BotFailure."""

    def __init__(self, inner: Any, limits: BotLimits, metrics: BotMetrics) -> None:
        self.inner = inner
        self._limits = limits
        self._metrics = metrics
        self.breaker = CircuitBreaker(limits, metrics)

    async def stream(self, session: Session, message: Message) -> AsyncGenerator[ReplyPart, None]:
        if not self.breaker.allow():
            self._metrics.errors.labels("circuit_open").inc()
            raise BotFailure("circuit_open")
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_by, whole_by = started + self._limits.first_token, started + self._limits.whole
        parts = stream_of(self.inner, session, message)
        first_seen = False
        handed_off = False
        verdict = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(whole_by if first_seen else min(first_by, whole_by)):
                        part = await anext(parts)
                except StopAsyncIteration:
                    break
                if isinstance(part, str) and part and not first_seen:
                    first_seen = True
                    self._metrics.first_token.observe(loop.time() - started)
                elif isinstance(part, Usage):
                    self._count_tokens(part)
                    continue
                handed_off = handed_off or isinstance(part, Handoff)
                yield part
            if not first_seen and not handed_off:
                raise BotFailure("unreadable", "an empty answer")
            verdict = True
            self.breaker.succeeded()
            self._metrics.reply.observe(loop.time() - started)
        except TimeoutError:
            verdict = True
            self._failed(
                BotFailure("timeout", "no first piece in time" if not first_seen else "answer too long")
            )
            raise BotFailure("timeout") from None
        except BotFailure as failure:
            verdict = True
            self._failed(failure)
            raise
        except Exception as exc:
            verdict = True
            logger.exception("the bot failed")
            self._failed(BotFailure("error", type(exc).__name__))
            raise BotFailure("error", type(exc).__name__) from exc
        finally:
            if not verdict:
                self.breaker.abandoned()
            await _close(parts)

    def _failed(self, failure: BotFailure) -> None:
        logger.warning("the bot could not answer: %s", failure)
        self._metrics.errors.labels(failure.kind).inc()
        self.breaker.failed()

    def _count_tokens(self, usage: Usage) -> None:
        if usage.prompt_tokens:
            self._metrics.tokens.labels("prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self._metrics.tokens.labels("completion").inc(usage.completion_tokens)

    async def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            await close()


async def _close(parts: AsyncIterator[ReplyPart]) -> None:
    """End the bot's generator now (a cancelled reply stops its HTTP request)."""
    aclose = getattr(parts, "aclose", None)
    if callable(aclose):
        try:
            await aclose()
        except Exception:  # the reply is over either way
            logger.debug("closing the bot's answer failed", exc_info=True)
