"""Agents' presence and capacity, on the workbench (docs/routing.md): an agent sets its status
(and capacity); anyone on the workbench lists the agents. An agent with no stream open on any
process for --agent-grace becomes offline by itself (``watch_presence``)."""

import logging
import time
from collections import Counter

from aiohttp import web

from app.domain import announcements
from app.domain.agents import Agent, AgentRegistry, AtCapacity, TooManyAgents
from app.domain.agents.base import AGENT_STATUSES
from app.domain.routing import moves
from app.domain.store import SessionStore
from app.domain.store.base import Outgoing
from app.keys import AGENTS, BACKENDS, ROUTING_METRICS, SETTINGS, SOURCE
from app.process.rounds import every
from app.web.answers import json_answer
from app.web.errors import ApiError
from handlers.access import acting_agent, limit_actions, require_agent
from handlers.common import load_body, path_name, router_of
from schemas import AgentStatusSchema
from schemas.plain import PlainBody

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

AGENT_STATUS = PlainBody(AgentStatusSchema())


@routes.post("/api/agents/{agent_id}/status")
async def set_status(request: web.Request) -> web.Response:
    principal = require_agent(request)
    limit_actions(request, principal)
    agent_id = acting_agent(principal, path_name(request, "agent_id"))
    body = await load_body(request, AGENT_STATUS)
    registry, source = request.config_dict[AGENTS], request.app[SOURCE]
    try:
        agent, _ = await registry.set_status(
            agent_id,
            body["status"],
            body.get("capacity"),
            announce=lambda a: announcements.of_agent(a, source=source, capacity=registry.capacity_of(a)),
        )
    except TooManyAgents as exc:
        raise ApiError(409, "too_many_agents", str(exc)) from exc
    if agent["status"] == "offline":
        await router_of(request.config_dict).agent_gone(agent_id, time.time())
    return json_answer(await _shown(registry, agent))


@routes.get("/api/agents")
async def list_agents(request: web.Request) -> web.Response:
    require_agent(request)
    registry = request.config_dict[AGENTS]
    agents = [
        {**agent, "capacity": registry.capacity_of(agent), "active": active}
        for agent, active in await registry.all()
    ]
    return json_answer({"agents": agents})


async def _shown(registry: AgentRegistry, agent: Agent) -> dict[str, object]:
    """The agent as the change left it, as the list shows it (with its load)."""
    active = len(await registry.held(agent["agent_id"]))
    return {**agent, "capacity": registry.capacity_of(agent), "active": active}


def refuse_over_capacity(exc: AtCapacity) -> ApiError:
    return ApiError(409, "at_capacity", str(exc))


async def _reconcile(
    registry: AgentRegistry,
    store: SessionStore,
    agents: list[tuple[Agent, int]],
    suspects: set[tuple[str, str]],
) -> set[tuple[str, str]]:
    """Release what was counted and neither held nor offered in the last round too; the
    counts neither held nor offered now. ``agents``: the round's read of the registry (each
    agent's conversations are read again here)."""
    unheld: set[tuple[str, str]] = set()
    for agent, active in agents:
        if not active:
            continue
        agent_id = agent["agent_id"]
        names = await registry.held(agent_id)
        sessions = await store.get_many(names)
        for name in names:
            session = sessions.get(name)
            if session is not None and agent_id in moves.counted_against(session):
                continue
            if (agent_id, name) in suspects:
                logger.info("agent %s: %s no longer counted, the agent does not hold it", agent_id, name)
                await registry.release(agent_id, name)
            else:
                unheld.add((agent_id, name))
    return unheld


class OpenAgentStreams:
    """How many agent streams this process has open, by agent: what it reports as seen."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def opened(self, agent_id: str) -> None:
        self._open[agent_id] += 1

    def closed(self, agent_id: str) -> None:
        self._open[agent_id] -= 1
        if self._open[agent_id] <= 0:
            del self._open[agent_id]

    def agents(self) -> list[str]:
        return list(self._open)


async def watch_presence(app: web.Application, streams: OpenAgentStreams) -> None:
    """Every process, every quarter of --agent-grace: report the agents with a stream open
    here, set offline the agents no process has seen for --agent-grace (each change once:
    the registry's compare-and-set), and stop counting against an agent a conversation it
    has not held for two rounds (a takeover that died between its count and its commit, a
    conversation closed by the sweeper or deleted)."""
    registry, grace = app[AGENTS], app[SETTINGS].agent_grace
    suspects: set[tuple[str, str]] = set()

    def announce(agent: Agent) -> list[Outgoing]:
        return announcements.of_agent(agent, source="system", capacity=registry.capacity_of(agent))

    async def one_round() -> None:
        nonlocal suspects
        now = time.time()
        await registry.seen(streams.agents(), now)
        for agent_id in await registry.unseen_since(now - grace):
            _, changed = await registry.set_status(agent_id, "offline", announce=announce)
            if changed:
                logger.info("agent %s is offline: no stream open for %.0f s", agent_id, grace)
        # What offline agents still hold goes back to the queue: here, whoever set them
        # offline (and if that process died on the way, the next round does it).
        router, by_status, agents = router_of(app), Counter[str](), await registry.all()
        for agent, active in agents:
            by_status[agent["status"]] += 1
            if agent["status"] == "offline" and active:
                await router.agent_gone(agent["agent_id"], now)
        for status in AGENT_STATUSES:
            app[ROUTING_METRICS].agents.labels(status).set(by_status[status])
        suspects = await _reconcile(registry, app[BACKENDS].store, agents, suspects)

    await every(grace / 4, one_round, "agent presence", logger)
