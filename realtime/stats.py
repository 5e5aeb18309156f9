"""What a broker counts, for the metrics endpoint: plain integers bumped on the hot path (a
Prometheus counter per delivery would cost a lock and a label lookup per stream per event),
read and exported at scrape time."""

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field

# Seconds from an event's id (the publisher's Redis clock, in ms) to its fan-out here.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class LatencyHistogram:
    """A fixed-bucket histogram: one bisect and two additions per observation."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of observations ≤ le) for every bucket, +Inf last, as Prometheus wants."""
        running, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass(slots=True)
class BrokerStats:
    """Counters of one broker (shared by the per-shard brokers of a cluster)."""

    published: Counter[str] = field(default_factory=Counter)  # by event type
    delivered: Counter[str] = field(default_factory=Counter)  # handed to local streams, by type
    replayed: int = 0  # delivered from the history (resumes, catch-ups)
    slow_consumers: int = 0  # subscriptions cut off because their queue filled
    discarded: Counter[str] = field(default_factory=Counter)  # their queued events, by type
    gaps: int = 0  # subscriptions ended because the history could not fill a gap
    malformed: int = 0  # messages from Redis dropped as unreadable or forged
    reconnects: int = 0  # pub/sub connections (re)established
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def fanned_out(self, event_type: str, event_ms: int, streams: int) -> None:
        self.delivered[event_type] += streams
        if event_ms:  # 0: an ephemeral event, which has no time in its (absent) id
            self.latency.observe(max(0.0, time.time() - event_ms / 1000))
