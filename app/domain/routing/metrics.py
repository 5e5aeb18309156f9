"""The router's Prometheus metrics (docs/routing.md, "Metrics"), in the process's registry
(app.web.metrics). Counters count what this process did: sum them over processes."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds a conversation waited before an agent took it or accepted its offer.
WAIT_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
OFFER_RESULTS = ("made", "accepted", "declined", "expired")
AGENT_STATUSES = ("online", "away", "offline")
SUPERVISOR_ACTIONS = ("whisper", "barge", "reassign")


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.queue_length = Gauge(
            "switchboard_queue_length",
            "Conversations waiting for an agent (the head the router reads, as of its last round).",
            registry=registry,
        )
        self.waited = Histogram(
            "switchboard_queue_wait_seconds",
            "How long a conversation waited before an agent took it or accepted its offer.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.first_answer = Histogram(
            "switchboard_first_answer_seconds",
            "From when a customer began waiting for a person to the holding agent's first message.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.offers = Counter(
            "switchboard_offers",
            "Offers of waiting conversations to agents, by result.",
            ("result",),
            registry=registry,
        )
        self.requeued = Counter(
            "switchboard_requeued",
            "Conversations handed back to the front of the queue, by reason (agent_offline, transfer, reassign).",
            ("reason",),
            registry=registry,
        )
        self.transfers = Counter(
            "switchboard_transfers", "Transfers, by kind (agent, offer, queue).", ("kind",), registry=registry
        )
        self.timeouts = Counter(
            "switchboard_routing_timeouts",
            "Conversations the router moved by a timer: wait (back to the bot), customer_idle (closed).",
            ("timer",),
            registry=registry,
        )
        self.agents = Gauge(
            "switchboard_agents",
            "Known agents by status (as of the last presence round).",
            ("status",),
            registry=registry,
        )
        self.supervised = Counter(
            "switchboard_supervisor_actions",
            "Supervisors' actions on conversations (docs/security.md): whisper, barge, reassign.",
            ("action",),
            registry=registry,
        )
        for action in SUPERVISOR_ACTIONS:
            self.supervised.labels(action)
        for result in OFFER_RESULTS:
            self.offers.labels(result)
        for status in AGENT_STATUSES:
            self.agents.labels(status)
