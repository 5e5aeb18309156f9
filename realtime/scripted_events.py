"""Events that another component's Lua script publishes with its own change: a session store
commits a change and publishes every event it causes in one script, so that a process that
dies after the script leaves no committed change unannounced.

The broker decides which events can go into a script whose keys live on ``home`` (a slot tag;
on one Redis every event can) and publishes the others itself, after the script, the way it
publishes anything (on a cluster: through its ordered outbox while their shard is away). The
caller runs realtime.event_script's ``publish_events`` on the section's keys and arguments and hands
the ids back to ``finish``."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from realtime import ids
from realtime.event_script import EventKeys, EventSection
from realtime.events import validated
from realtime.redis_node import RedisNode

__all__ = ["Outgoing", "Planned", "ScriptedEvents"]

# An event on its way out: its channel and its envelope.
Outgoing = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Planned:
    """The events of one script: those it publishes (with their encodings) and its section,
    and those the broker publishes after it."""

    in_script: list[tuple[str, dict[str, Any], str]]
    section: EventSection
    after: list[Outgoing] = field(default_factory=list)


class ScriptedEvents(ABC):
    def __init__(self, keys: EventKeys) -> None:
        self._keys = keys

    def plan(self, events: Sequence[Outgoing], home: str) -> Planned:
        """Validate and encode ``events`` (ValidationError for a bad one, before anything is
        written) and split them into the script's part and the broker's."""
        in_script: list[tuple[str, dict[str, Any], str]] = []
        after: list[Outgoing] = []
        for channel, event in events:
            data = validated(event)
            if self._belongs(channel, home):
                in_script.append((channel, event, data))
            else:
                after.append((channel, event))
        section = self._keys.section([(channel, data) for channel, _, data in in_script])
        return Planned(in_script, section, self._also_after(in_script, after))

    async def finish(self, planned: Planned, event_ids: Sequence[str]) -> None:
        """After the script committed: count the events it published (and hand them to this
        process's streams if the pub/sub reader is away), then publish the rest."""
        for (channel, event, data), event_id in zip(planned.in_script, event_ids, strict=True):
            self._record(event_id, channel, event, data)
        for channel, event in planned.after:
            await self._publish_after(channel, event)

    @abstractmethod
    def _belongs(self, channel: str, home: str) -> bool:
        """Whether the channel's keys live on the slot of ``home``."""

    def _also_after(
        self, in_script: list[tuple[str, dict[str, Any], str]], after: list[Outgoing]
    ) -> list[Outgoing]:
        """What else the broker publishes for the events the script does (a cluster's feed)."""
        return after

    @abstractmethod
    def _record(self, event_id: str, channel: str, event: dict[str, Any], data: str) -> None:
        """What the broker does with an event it published itself (count it, ...)."""

    async def _publish_after(self, channel: str, event: dict[str, Any]) -> None:
        raise AssertionError(f"an event on {channel} was left out of the script on one Redis")


def record_on(node: RedisNode, event_id: str, channel: str, event: dict[str, Any], data: str) -> None:
    """As the node's own publish would: its clock has seen the id, and the event is counted
    (and handed to this process's streams while the pub/sub reader is away)."""
    node.log.clock.observe(ids.parse(event_id))
    node.published(event_id, channel, event, data)


class OneRedisScriptedEvents(ScriptedEvents):
    """One Redis: every key is in reach of every script."""

    def __init__(self, node: RedisNode) -> None:
        super().__init__(node.log.keys)
        self._one = node

    def _belongs(self, channel: str, home: str) -> bool:
        return True

    def _record(self, event_id: str, channel: str, event: dict[str, Any], data: str) -> None:
        record_on(self._one, event_id, channel, event, data)
