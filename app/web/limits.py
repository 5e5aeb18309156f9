"""Limits of the web layer: the largest request body, the readiness probe's wait, and rate
limits (a token bucket per principal, in memory, per process)."""

import math
import time
from collections import OrderedDict

# The largest request body, in bytes (aiohttp answers 413 past it).
MAX_BODY = 64 * 1024
# How long GET /health/ready waits for its canary to come back, in seconds.
READY_TIMEOUT = 2.0


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
