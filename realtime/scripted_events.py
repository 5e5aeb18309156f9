"""Events that another component's Lua script publishes with its own change: a session store
commits a change and publishes every event it causes in one script, so that a process that
dies after the script leaves no committed change unannounced.

The broker decides which events can go into a script whose keys live on ``home`` (a slot tag;
on one Redis every event can). On a cluster the others go into the session's outbox in the
same script and the broker publishes them after it (realtime.session_outbox), so they too
survive the process. The caller calls ``before`` before each run of the script, runs
realtime.event_script's ``publish_events`` on the section's keys and arguments, and hands its
reply to ``finish``."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from realtime import ids
from realtime.channels import is_queue
from realtime.event_script import EventKeys, EventSection
from realtime.events import encode, validated
from realtime.redis_node import RedisNode

__all__ = ["Outgoing", "Planned", "ScriptedEvents"]

# An event on its way out: its channel and its envelope.
Outgoing = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Planned:
    """The events of one script: those it publishes (with their encodings), its section, and
    (a cluster's) those it leaves in the session's outbox for the broker to publish after it,
    with the name the session is known by among the pending outboxes."""

    in_script: list[tuple[str, dict[str, Any], str]]
    section: EventSection
    home: str = ""
    pending: str = ""


class ScriptedEvents(ABC):
    def __init__(self, keys: EventKeys) -> None:
        self._keys = keys

    def plan(self, events: Sequence[Outgoing], home: str) -> Planned:
        """Validate and encode ``events`` (ValidationError for a bad one, before anything is
        written) and split them into the script's part and the outbox's."""
        in_script: list[tuple[str, dict[str, Any], str]] = []
        elsewhere: list[tuple[str, str]] = []
        for channel, event in events:
            # A queue's entries are this server's own records, not envelopes for clients.
            data = encode(event) if is_queue(channel) else validated(event)
            if self._belongs(channel, home):
                in_script.append((channel, event, data))
            else:
                elsewhere.append((channel, data))
        return self._planned(in_script, elsewhere, home)

    def _planned(
        self, in_script: list[tuple[str, dict[str, Any], str]], elsewhere: list[tuple[str, str]], home: str
    ) -> Planned:
        if elsewhere:
            raise AssertionError(f"events on {[c for c, _ in elsewhere]} were left out of the script")
        return Planned(in_script, self._keys.section([(channel, data) for channel, _, data in in_script]))

    async def before(self, planned: Planned) -> None:
        """Before each run of the script (a cluster notes the session's outbox as pending)."""
        return None

    async def abandon(self, planned: Planned) -> None:
        """After a run of the script that wrote nothing (the session had changed): what
        ``before`` noted is not needed."""
        return None

    async def finish(self, planned: Planned, reply: Sequence[str]) -> None:
        """After the script committed, with what its ``publish_events`` returned: count the
        events it published (and hand them to this process's streams if the pub/sub reader is
        away), then publish what waits in the outbox."""
        count = len(planned.in_script)
        for (channel, event, data), event_id in zip(planned.in_script, reply[:count], strict=True):
            if not is_queue(channel):
                self._record(event_id, channel, event, data)
        await self._after(planned, reply[count:])

    @abstractmethod
    def _belongs(self, channel: str, home: str) -> bool:
        """Whether the channel's keys live on the slot of ``home``."""

    @abstractmethod
    def _record(self, event_id: str, channel: str, event: dict[str, Any], data: str) -> None:
        """What the broker does with an event it published itself (count it, ...)."""

    async def _after(self, planned: Planned, held: Sequence[str]) -> None:
        """Publish the outbox's entries (id, channel, data each) the script answered."""
        return None


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
