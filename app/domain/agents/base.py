"""The agent registry's interface, and its pure rules (shared by the Redis and memory ones)."""

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

from app.domain.store.base import Outgoing, StoreError
from schemas.fields import AGENT_STATUSES

__all__ = ["AGENT_STATUSES"]

AgentStatus = Literal["online", "away", "offline"]
# Agents one deployment keeps records of at most (each is a few hundred bytes; under
# --insecure anybody can name one).
MAX_AGENTS = 10_000
# An agent's record lives this long after its last change (then it is as if never seen).
AGENT_TTL = 30 * 24 * 3600.0


class Agent(TypedDict):
    agent_id: str
    status: AgentStatus
    capacity: int | None  # None: --agent-capacity
    updated_at: int


# What a status change publishes (app.domain.announcements.of_agent), given the agent after it.
AnnounceAgent = Callable[[Agent], Sequence[Outgoing]]


class AtCapacity(StoreError):
    def __init__(self, agent_id: str, capacity: int) -> None:
        super().__init__(f"agent {agent_id} holds {capacity} conversations, its capacity")
        self.capacity = capacity


class TooManyAgents(StoreError):
    def __init__(self) -> None:
        super().__init__(f"this deployment knows {MAX_AGENTS} agents already")


def new_agent(agent_id: str) -> Agent:
    return Agent(agent_id=agent_id, status="offline", capacity=None, updated_at=int(time.time()))


def changed(agent: Agent, status: AgentStatus, capacity: int | None) -> Agent | None:
    """The agent after a status (and, if given, capacity) change; None if it changes nothing."""
    moved = agent.copy()
    moved["status"] = status
    if capacity is not None:
        moved["capacity"] = capacity
    if moved == agent:
        return None
    moved["updated_at"] = int(time.time())
    return moved


class AgentRegistry(ABC):
    """Atomic per call. ``default_capacity`` is --agent-capacity."""

    def __init__(self, default_capacity: int) -> None:
        self.default_capacity = default_capacity

    def capacity_of(self, agent: Agent) -> int:
        return agent["capacity"] if agent["capacity"] is not None else self.default_capacity

    @abstractmethod
    async def get(self, agent_id: str) -> Agent:
        """The agent's record (a new, offline one if it has none)."""

    @abstractmethod
    async def all(self) -> list[tuple[Agent, int]]:
        """Every known agent, by id, with how many conversations it holds."""

    @abstractmethod
    async def set_status(
        self,
        agent_id: str,
        status: AgentStatus,
        capacity: int | None = None,
        *,
        announce: AnnounceAgent | None = None,
    ) -> tuple[Agent, bool]:
        """Change an agent's status (and capacity), publishing what ``announce`` makes of it in
        the same step; the agent after it, and whether anything changed. Raises TooManyAgents."""

    @abstractmethod
    async def reserve(self, agent_id: str, session_name: str) -> bool:
        """Count a conversation the agent is getting against its capacity, before the change
        that gives it commits. True if this call counted it; False if it was counted already
        (the agent holds it or it is offered to it, or another process is giving it to the
        agent right now): only a caller that counted it may give the count back when its
        change does not commit. Raises AtCapacity."""

    @abstractmethod
    async def last_assigned(self) -> dict[str, float]:
        """When each agent last had a conversation counted against it (unix seconds): the
        router's tie-break, the one idle longest first."""

    @abstractmethod
    async def release(self, agent_id: str, session_name: str) -> None:
        """The agent no longer holds the conversation (or did not get it)."""

    @abstractmethod
    async def held(self, agent_id: str) -> list[str]:
        """The conversations counted against the agent."""

    @abstractmethod
    async def seen(self, agent_ids: Sequence[str], now: float) -> None:
        """These agents have a stream open now (the presence heartbeat of each process)."""

    @abstractmethod
    async def unseen_since(self, before: float) -> list[str]:
        """Agents that are not offline and that no process has seen since ``before`` (unix
        seconds): an agent set online is seen then, so it has the grace to open a stream."""
