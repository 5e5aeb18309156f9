"""The agent registry in the process (--no-redis): the same rules, no await between a read and
its write."""

import time
from collections.abc import Sequence

from app.domain.agents.base import (
    MAX_AGENTS,
    Agent,
    AgentRegistry,
    AgentStatus,
    AnnounceAgent,
    AtCapacity,
    TooManyAgents,
    changed,
    new_agent,
)
from app.domain.store.memory import Publish


class MemoryAgentRegistry(AgentRegistry):
    def __init__(self, default_capacity: int, publish: Publish | None = None) -> None:
        super().__init__(default_capacity)
        self._publish = publish
        self._agents: dict[str, Agent] = {}
        self._held: dict[str, dict[str, None]] = {}
        self._seen: dict[str, float] = {}
        self._assigned: dict[str, float] = {}

    async def get(self, agent_id: str) -> Agent:
        return (self._agents.get(agent_id) or new_agent(agent_id)).copy()

    async def all(self) -> list[tuple[Agent, int]]:
        return [(self._agents[a].copy(), len(self._held.get(a, {}))) for a in sorted(self._agents)]

    async def set_status(
        self,
        agent_id: str,
        status: AgentStatus,
        capacity: int | None = None,
        *,
        announce: AnnounceAgent | None = None,
    ) -> tuple[Agent, bool]:
        known = self._agents.get(agent_id)
        if known is None and len(self._agents) >= MAX_AGENTS:
            raise TooManyAgents()
        agent = known or new_agent(agent_id)
        moved = changed(agent, status, capacity)
        if status != "offline":
            self._seen[agent_id] = float(moved["updated_at"] if moved else agent["updated_at"])
        if moved is None:
            return agent.copy(), False
        self._agents[agent_id] = moved
        if announce is not None and self._publish is not None:
            for channel, event in announce(moved):
                await self._publish(channel, event)
        return moved.copy(), True

    async def reserve(self, agent_id: str, session_name: str) -> bool:
        held = self._held.setdefault(agent_id, {})
        if session_name in held:
            return False
        capacity = self.capacity_of(self._agents.get(agent_id) or new_agent(agent_id))
        if len(held) >= capacity:
            raise AtCapacity(agent_id, capacity)
        held[session_name] = None
        self._assigned[agent_id] = time.time()
        return True

    async def last_assigned(self) -> dict[str, float]:
        return dict(self._assigned)

    async def release(self, agent_id: str, session_name: str) -> None:
        held = self._held.get(agent_id)
        if held is not None:
            held.pop(session_name, None)
            if not held:
                del self._held[agent_id]

    async def held(self, agent_id: str) -> list[str]:
        return list(self._held.get(agent_id, {}))

    async def seen(self, agent_ids: Sequence[str], now: float) -> None:
        for agent_id in agent_ids:
            self._seen[agent_id] = now

    async def unseen_since(self, before: float) -> list[str]:
        return [
            a
            for a, agent in self._agents.items()
            if agent["status"] != "offline" and self._seen.get(a, 0) < before
        ]
