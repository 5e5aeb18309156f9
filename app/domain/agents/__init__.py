"""Agents: their presence (online, away, offline) and capacity, and the conversations each
holds, counted against it (docs/routing.md)."""

from app.domain.agents.base import (
    AGENT_STATUSES,
    Agent,
    AgentRegistry,
    AgentStatus,
    AtCapacity,
    TooManyAgents,
)
from app.domain.agents.memory import MemoryAgentRegistry

__all__ = [
    "AGENT_STATUSES",
    "Agent",
    "AgentRegistry",
    "AgentStatus",
    "AtCapacity",
    "MemoryAgentRegistry",
    "TooManyAgents",
]
