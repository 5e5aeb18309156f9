"""``GET /metrics``: Prometheus metrics of this process, in its own registry.

Request latency is observed by the request middleware (a histogram per route). Everything on
the event path is counted with plain integers where it happens (realtime.stats.BrokerStats,
the stream registry) and read when Prometheus scrapes, so that counting costs the fan-out
nothing it would notice.
"""

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.backends import Backends
from app.web.connections import STAGES, TimedOut
from app.web.limits import StartRefusals

if TYPE_CHECKING:
    from app.domain.retention import SweepStats
    from handlers.sse import StreamRegistry  # the registry lives with the SSE writer

# Names and help texts of the metrics that the OpenAPI document shows as its example.
STREAMS_OPEN = "switchboard_streams_open"
STREAMS_OPEN_HELP = "Open SSE streams, by sub-app."
REQUEST_DURATION = "switchboard_request_duration_seconds"
REQUEST_DURATION_HELP = (
    "Time to answer a request (event streams excluded: they last as long as their client)."
)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BROKER_MODES = ("redis", "redis-cluster", "memory")
ESCALATION_REFUSALS = ("queue_full",)
STARTS_REFUSED = "switchboard_starts_refused"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Histogram(
            REQUEST_DURATION,
            REQUEST_DURATION_HELP,
            ("method", "route", "status"),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        # Escalations refused, by reason (``queue_full``: --max-waiting).
        self.escalations_refused: Counter[str] = Counter()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).observe(seconds)

    def count_refusals(self, refusals: StartRefusals) -> None:
        """Export what the per-address limit refused (read at scrape time)."""
        self.registry.register(_RefusalCollector(refusals))

    def watch(self, streams: "StreamRegistry", backends: Backends, components: Sequence[str]) -> None:
        """Export what the streams and the broker count (once the backends are open)."""
        self.registry.register(_EventPathCollector(streams, backends, components))

    def watch_sweeper(self, stats: "SweepStats") -> None:
        self.registry.register(_BoundsCollector(stats, self.escalations_refused))

    def watch_connections(self, timed_out: TimedOut) -> None:
        """Export the connections closed for their client's slowness."""
        self.registry.register(_ConnectionCollector(timed_out))

    def exposition(self) -> tuple[bytes, str]:
        """The text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _BoundsCollector(Collector):
    """What the bounds of docs/security.md did."""

    def __init__(self, sweep: "SweepStats", escalations_refused: Counter[str]) -> None:
        self._sweep = sweep
        self._escalations_refused = escalations_refused

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "switchboard_sessions_closed_idle",
            "Bot conversations the sweeper closed after --idle-ttl without activity.",
            value=self._sweep.closed_idle,
        )
        yield CounterMetricFamily(
            "switchboard_sessions_expired",
            "Closed sessions (with their transcripts) deleted past --retention.",
            value=self._sweep.deleted,
        )
        refused = CounterMetricFamily(
            "switchboard_escalations_refused",
            "Escalations refused, by reason (queue_full: --max-waiting conversations wait).",
            labels=("reason",),
        )
        for reason in ESCALATION_REFUSALS:
            refused.add_metric((reason,), self._escalations_refused[reason])
        yield refused


class _RefusalCollector(Collector):
    def __init__(self, refusals: StartRefusals) -> None:
        self._refusals = refusals

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            STARTS_REFUSED,
            "Requests refused by the per-address limit (--start-rate), by kind: start (a "
            "conversation) or escalation (POST /manual/escalate, or the bot's hand-off skipped).",
            labels=("kind",),
        )
        for kind, count in self._refusals.by_kind.items():  # every kind, 0 until refused
            refused.add_metric((kind,), count)
        yield refused


class _EventPathCollector(Collector):
    def __init__(self, streams: "StreamRegistry", backends: Backends, components: Sequence[str]) -> None:
        self._streams = streams
        self._backends = backends
        self._components = tuple(components)

    def collect(self) -> Iterator[Metric]:
        broker = self._backends.broker
        stats = broker.stats
        streams = GaugeMetricFamily(STREAMS_OPEN, STREAMS_OPEN_HELP, labels=("component",))
        counts = self._streams.by_component()
        for component in self._components:  # 0, not absent, for a sub-app without streams
            streams.add_metric((component,), counts.get(component, 0))
        yield streams
        yield CounterMetricFamily(
            "switchboard_streams_opened",
            "SSE streams opened since start.",
            value=self._streams.opened_total,
        )
        published = CounterMetricFamily(
            "switchboard_events_published",
            "Events this process published, by type.",
            labels=("type",),
        )
        for event_type, count in sorted(stats.published.items()):
            published.add_metric((event_type,), count)
        yield published
        delivered = CounterMetricFamily(
            "switchboard_events_delivered",
            "Events handed to this process's open streams (one per stream), by type.",
            labels=("type",),
        )
        for event_type, count in sorted(stats.delivered.items()):
            delivered.add_metric((event_type,), count)
        yield delivered
        dropped = CounterMetricFamily(
            "switchboard_events_dropped",
            "Events given up, by reason and type: slow_consumer (queued for a stream that was "
            "cut off; its client resumes and gets them from the history), malformed (an "
            "unreadable or forged message from Redis; its type is unknown).",
            labels=("reason", "type"),
        )
        for event_type, count in sorted(stats.discarded.items()):
            dropped.add_metric(("slow_consumer", event_type), count)
        dropped.add_metric(("malformed", "unknown"), stats.malformed)
        yield dropped
        yield CounterMetricFamily(
            "switchboard_stream_gaps",
            "Streams ended because the history could not fill a gap (their clients resume "
            "with recovered: false).",
            value=stats.gaps,
        )
        yield CounterMetricFamily(
            "switchboard_events_replayed",
            "Events delivered from the history (resumed streams, catch-ups after a reconnect).",
            value=stats.replayed,
        )
        yield CounterMetricFamily(
            "switchboard_slow_consumer_disconnects",
            "Streams cut off because their client did not keep up.",
            value=stats.slow_consumers,
        )
        yield CounterMetricFamily(
            "switchboard_redis_reconnects",
            "Redis pub/sub connections (re)established (one per shard on a cluster).",
            value=stats.reconnects,
        )
        mode = GaugeMetricFamily(
            "switchboard_broker_mode",
            "What carries events now (1 for the current mode).",
            labels=("mode",),
        )
        for name in BROKER_MODES:
            mode.add_metric((name,), 1 if self._backends.mode == name else 0)
        yield mode
        yield GaugeMetricFamily(
            "switchboard_degraded",
            "1 while Redis is configured but cannot be used.",
            value=1 if self._backends.degraded else 0,
        )
        if broker.waiting is not None:  # a broker with an outbox: a cluster's
            yield GaugeMetricFamily(
                "switchboard_cluster_outbox_events",
                "Events accepted while their Redis Cluster shard is away, waiting to be published.",
                value=broker.waiting,
            )
        latency = stats.latency
        yield HistogramMetricFamily(
            "switchboard_publish_to_delivery_seconds",
            "From an event's id (the Redis clock when it was published) to its fan-out to this "
            "process's streams; once per event and process.",
            buckets=latency.cumulative(),
            sum_value=latency.total,
        )


class _ConnectionCollector(Collector):
    def __init__(self, timed_out: TimedOut) -> None:
        self._timed_out = timed_out

    def collect(self) -> Iterator[Metric]:
        closed = CounterMetricFamily(
            "switchboard_connections_timed_out",
            "Connections closed because their client did not send a whole request within "
            "--client-timeout, by what it was sending: idle (nothing: a silent or idle "
            "keep-alive connection), head (a request head), body (a request body).",
            labels=("stage",),
        )
        for stage in STAGES:
            closed.add_metric((stage,), self._timed_out.by_stage[stage])
        yield closed
