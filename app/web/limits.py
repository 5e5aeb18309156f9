"""Limits of the web layer: the largest request body, the readiness probe's wait, and rate
limits (token buckets in memory, per process: one per principal for actions, one per client
address for conversation starts and escalations)."""

import math
import time
from collections import OrderedDict
from typing import Literal

# The largest request body, in bytes (aiohttp answers 413 past it).
MAX_BODY = 64 * 1024
# How long GET /health/ready waits for its canary to come back, in seconds.
READY_TIMEOUT = 2.0
# What the per-address limit counts: conversations started, and requests for a human.
StartKind = Literal["start", "escalation"]
START_KINDS: tuple[StartKind, ...] = ("start", "escalation")
START_RATE_MESSAGE = "too many conversations started or escalated from this address; retry later"


class RateLimiter:
    """``rate`` requests per second per key on average, bursts of up to ``burst``.

    Keys are forgotten least-recently-used past ``max_keys``, so a flood of new keys cannot
    grow memory; a forgotten key simply starts with a full bucket again.
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0 if allowed, else seconds to wait."""
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))


class StartRefusals:
    """What the per-address limit refused, by kind: plain integers, read when Prometheus
    scrapes (a bot's escalation skipped over the limit counts as an ``escalation``)."""

    def __init__(self) -> None:
        self.by_kind: dict[StartKind, int] = dict.fromkeys(START_KINDS, 0)

    def count(self, kind: StartKind) -> None:
        self.by_kind[kind] += 1
