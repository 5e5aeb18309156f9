"""The agent registry of a process that started while Redis was away (app.backends): in
memory until the session store has moved to Redis, then Redis's. What the memory one counted
is not moved (docs/routing.md)."""

from collections.abc import Sequence

from app.domain.agents.base import Agent, AgentRegistry, AgentStatus, AnnounceAgent
from app.domain.store.fallback import StartupFallbackStore


class StartupFallbackAgents(AgentRegistry):
    def __init__(self, memory: AgentRegistry, redis: AgentRegistry, store: StartupFallbackStore) -> None:
        super().__init__(redis.default_capacity)
        self._memory = memory
        self._redis = redis
        self._store = store

    @property
    def _now(self) -> AgentRegistry:
        return self._redis if self._store.on_redis else self._memory

    async def get(self, agent_id: str) -> Agent:
        return await self._now.get(agent_id)

    async def all(self) -> list[tuple[Agent, int]]:
        return await self._now.all()

    async def set_status(
        self,
        agent_id: str,
        status: AgentStatus,
        capacity: int | None = None,
        *,
        announce: AnnounceAgent | None = None,
    ) -> tuple[Agent, bool]:
        return await self._now.set_status(agent_id, status, capacity, announce=announce)

    async def reserve(self, agent_id: str, session_name: str) -> bool:
        return await self._now.reserve(agent_id, session_name)

    async def last_assigned(self) -> dict[str, float]:
        return await self._now.last_assigned()

    async def release(self, agent_id: str, session_name: str) -> None:
        await self._now.release(agent_id, session_name)

    async def held(self, agent_id: str) -> list[str]:
        return await self._now.held(agent_id)

    async def seen(self, agent_ids: Sequence[str], now: float) -> None:
        await self._now.seen(agent_ids, now)

    async def unseen_since(self, before: float) -> list[str]:
        return await self._now.unseen_since(before)
