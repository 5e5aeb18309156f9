"""What the router counts (docs/routing.md, "Metrics"), read by app.web.metrics at a scrape."""

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class RoutingMetrics:
    # The waiting conversations the last round saw (up to the head it reads).
    queue_length: int = 0
    # Offers by result: made, accepted, declined, expired.
    offers: Counter[str] = field(default_factory=Counter)
    # Conversations handed back to the queue, by reason: agent_offline, transfer.
    requeued: Counter[str] = field(default_factory=Counter)
    # Transfers by kind: agent (directly), offer (auto assignment), queue.
    transfers: Counter[str] = field(default_factory=Counter)
    wait_timeouts: int = 0
    idle_closed: int = 0
