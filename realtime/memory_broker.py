"""In-process broker: the embedded default, the fallback when Redis is away, and a test double
that honours the same contract as RedisBroker (it is exercised by the same contract suite)."""

from collections.abc import Iterable
from typing import Any

from realtime import ids
from realtime.broker import Broker
from realtime.events import Event, validated


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = ids.IdClock()

    async def publish(self, channel: str, event: dict[str, Any]) -> str:
        data = validated(event)
        event_id = self._clock.next(channel)
        self._fan_out(Event.build(event_id, channel, event, data))
        return event_id

    async def last_id(self, channels: Iterable[str]) -> str:
        return ids.latest([self._clock.last(channel) for channel in channels])
