"""In-process broker: the embedded default (``--no-redis``), and a broker that honours the same
contract as RedisBroker (the contract suite runs against both). It is the local fan-out and an
event log in memory, and is itself what its subscriptions attach to."""

from collections.abc import Iterable
from typing import Any

from realtime.broker import DEFAULT_QUEUE_SIZE, Broker
from realtime.channels import is_queue
from realtime.delivery_queue import MemoryDeliveryQueue
from realtime.events import encode, validated
from realtime.fanout import FanOut
from realtime.history import HISTORY_BYTES, History
from realtime.memory_log import MemoryEventLog
from realtime.stats import BrokerStats
from realtime.subscription import Feed, Subscription


class MemoryBroker(Broker):
    mode = "memory"

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float = 3600.0,
        history_bytes: int = HISTORY_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        stats: BrokerStats | None = None,
    ) -> None:
        super().__init__(queue_size=queue_size, stats=stats)
        self._log = MemoryEventLog(
            history_size=history_size, history_ttl=history_ttl, history_bytes=history_bytes
        )
        self._fan_out = FanOut(self.stats)
        self._queues: dict[str, MemoryDeliveryQueue] = {}

    def delivery_queue(self, channel: str) -> MemoryDeliveryQueue:
        if not is_queue(channel):
            raise ValueError(f"not a delivery queue: {channel!r}")
        return self._queues.setdefault(channel, MemoryDeliveryQueue())

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        if is_queue(channel):
            return self.delivery_queue(channel).append(encode(event))
        data = validated(event)
        item = self._log.append(channel, event, data)
        self.stats.published[event["type"]] += 1
        self._fan_out.deliver_matching(item)
        return item.id

    async def position(self, channels: Iterable[str] = ()) -> str:
        return self._log.position

    async def last_event_id(self, channel: str) -> str | None:
        return self._log.last_event_id(channel)

    async def history(self, channels: Iterable[str], after: str) -> History:
        return self._log.history(channels, after)

    async def attach(self, subscription: Subscription) -> None:
        self._fan_out.add(subscription)

    async def detach(self, subscription: Subscription) -> None:
        self._fan_out.remove(subscription)

    def _feed(self, channels: tuple[str, ...]) -> Feed:
        return self

    def _fan_outs(self) -> tuple[FanOut]:
        return (self._fan_out,)
