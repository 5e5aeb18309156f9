"""What one benchmark run measures: per set of open streams, and per load scenario."""

from dataclasses import dataclass, field

import numpy

CLUSTER = "switchboard-cluster"
NCHAN = "nchan"
MODES = ("switchboard", CLUSTER, "baseline", "baseline-pool", NCHAN)
BASELINES = ("baseline", "baseline-pool")
# The modes switchboard is compared with, figure by figure (switchboard / mode).
COMPARED = (*BASELINES, NCHAN)
# How each mode runs bench.serve, in the report's words.
MODE_NOTES = {
    "switchboard": "this server: one Redis pub/sub connection per process, fanning out to its streams",
    CLUSTER: "the same server on a local Redis Cluster of 3 masters (`--redis-url "
    "redis+cluster://...`): sharded pub/sub (SSUBSCRIBE / SPUBLISH), one pub/sub connection per "
    "primary, the same publish script with a clock per slot tag; run at one N only (see "
    '"Redis Cluster" below)',
    "baseline": "the original design (`bench/baseline_broker.py`): one Redis pub/sub connection, and "
    "one reader task, per stream, from redis-py's default pool (at most 100 connections)",
    "baseline-pool": "the same baseline with its pools raised to 20,000 connections "
    "(`?max_connections=20000` on the Redis URL, which redis-py applies to every pool built "
    "from that URL), so that it can be measured past 100 streams",
    NCHAN: "the reference: nchan (nginx's pub/sub module, Debian's `libnginx-mod-nchan`) with "
    "Redis storage in one nginx worker, on the same URLs and fed the same messages "
    '(`bench/nchan.py`, see "nchan" below); skipped, and shown as not installed, without it',
}
SHORT = {"switchboard": "s", CLUSTER: "c", "baseline": "b", "baseline-pool": "p", NCHAN: "n"}
POOL_QUERY = "?max_connections=20000"
LAYOUTS = {"one": "one channel", "per10": "one channel per 10 streams"}
LOADS = {"fixed": "fixed rate", "max": "max rate"}


@dataclass(slots=True)
class OpenResult:
    """N streams opened on a fresh server, idle: time, memory and Redis connections."""

    mode: str
    n: int
    layout: str
    opened: int = 0
    open_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    redis_connections: int | None = None
    pubsub_connections: int | None = None
    failure: str | None = None
    stopped: str = ""  # how the server process ended, when it did not exit cleanly at once
    at_once: int = 100  # streams being opened at once, at most
    # Set when this is a second try, opening fewer at once: how the first try failed.
    retried_after: str | None = None

    @property
    def rss_per_stream_kib(self) -> float | None:
        if self.failure or not self.opened:
            return None
        return (self.rss_after_kib - self.rss_before_kib) / self.opened


@dataclass(slots=True)
class ScenarioResult:
    """One load (fixed or max rate) on one set of open streams."""

    mode: str
    n: int
    layout: str
    load: str
    failure: str | None = None
    published: int = 0
    attempted: int = 0
    publish_errors: dict[str, int] = field(default_factory=dict)
    publish_rps: float = 0.0
    request_p50_ms: float = 0.0
    request_p99_ms: float = 0.0
    expected: int = 0
    deliveries: int = 0
    missing: int = 0
    duplicates: int = 0
    unexpected: int = 0
    cut: int = 0
    # The wait for the last deliveries ended while they were still arriving, or while the
    # server was still busy (then the missing events are most likely late, not lost).
    late: bool = False
    busy_after: float | None = None  # server CPU % just after the wait, when events were missing
    deliveries_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    seconds: float = 0.0
    server_cpu: float = 0.0
    redis_cpu: float = 0.0
    receiver_cpu: list[float] = field(default_factory=list)
    publisher_cpu: float = 0.0
    machine_cpu: float = 0.0

    @property
    def loadgen_bound(self) -> bool:
        """Whether a load-generator process was near a full core (then it, not the server,
        may have set the pace)."""
        return max(self.receiver_cpu, default=0.0) >= 90.0 or self.publisher_cpu >= 90.0


def latency_percentiles(samples: numpy.ndarray) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds (zeros when there are no samples)."""
    if samples.size == 0:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p90, p99 = numpy.percentile(samples, [50, 90, 99]) * 1000.0
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(samples.max() * 1000.0),
    }


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, None when either is missing or theirs is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def scenario_of(
    scenarios: list[ScenarioResult], mode: str, n: int, layout: str, load: str
) -> ScenarioResult | None:
    """The load of ``mode`` at ``n`` streams in ``layout`` (each is run once), if it ran."""
    return next((s for s in scenarios if (s.mode, s.n, s.layout, s.load) == (mode, n, layout, load)), None)


def open_of(opens: list[OpenResult], mode: str, n: int, layout: str) -> OpenResult | None:
    """The opening of ``n`` streams of ``mode`` in ``layout``, if it ran."""
    return next((o for o in opens if (o.mode, o.n, o.layout) == (mode, n, layout)), None)
