"""Offers and transfers on the workbench (docs/routing.md): an agent accepts or declines a
conversation offered to it, and the holder hands a conversation to another agent or back to
the queue. The router's rounds (``route``) run in every process that serves the workbench."""

import logging
import time
from collections.abc import Sequence

from aiohttp import web

from app.domain.agents import AtCapacity
from app.domain.routing import moves
from app.domain.routing.router import TRANSFER_NOTICE
from app.domain.store import Transition
from app.domain.store.base import Move, Outgoing, StoreError
from app.keys import AGENTS, BACKENDS, CUSTOMERS_ACTIVE, ROUTING_METRICS, SETTINGS, STREAMS
from app.process.rounds import every
from app.web.answers import json_answer
from app.web.errors import ApiError
from handlers.access import acting_agent, limit_actions, require_agent
from handlers.agents import refuse_over_capacity
from handlers.common import agent_acting_on, load_body, path_name, router_of
from handlers.queue_watch import note_served
from schemas import TransferSchema
from schemas.plain import PlainBody

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

TRANSFER = {True: PlainBody(TransferSchema(partial=("agent_id",))), False: PlainBody(TransferSchema())}


async def _agent_move(
    request: web.Request,
    move: Move,
    notice: str | None = None,
    ended: str = "withdrawn",
    also: Sequence[Outgoing] = (),
) -> Transition:
    """An agent's (or a supervisor's) routing move, published as the workbench's (409 if
    refused, 404 if the conversation does not exist), with ``also`` if it changes anything."""
    router = router_of(request.config_dict)
    done = await router.change(
        path_name(request, "session_name"),
        move,
        source="agent_workbench",
        notice=notice,
        ended=ended,
        strict=True,
        also=also,
    )
    assert done is not None
    return done


async def counted_move(
    request: web.Request,
    agent_id: str | None,
    move: Move,
    notice: str | None = None,
    *,
    also: Sequence[Outgoing] = (),
) -> Transition:
    """A move that gives the conversation to ``agent_id`` (an accept, a transfer to it; None:
    to nobody): counted against the agent first (409 at_capacity), the count given back if the
    move is refused and this call took it."""
    if agent_id is None:
        return await _agent_move(request, move, notice, also=also)
    name = path_name(request, "session_name")
    try:
        counted = await request.config_dict[AGENTS].reserve(agent_id, name)
    except AtCapacity as exc:
        raise refuse_over_capacity(exc) from exc
    try:
        return await _agent_move(request, move, notice, also=also)
    except BaseException:
        if counted:
            await router_of(request.config_dict).uncount(agent_id, name)
        raise


@routes.post("/api/sessions/{session_name}/accept")
async def accept(request: web.Request) -> web.Response:
    _, agent_id = await agent_acting_on(request)
    # Counted with the offer already: this finds it (and counts a takeover-like accept of none).
    done = await counted_move(request, agent_id, moves.accept(agent_id, time.time()))
    if done.changed:
        request.config_dict[ROUTING_METRICS].offers.labels("accepted").inc()
        await served(request, done)
    return json_answer(done.session)


@routes.post("/api/sessions/{session_name}/decline")
async def decline(request: web.Request) -> web.Response:
    _, agent_id = await agent_acting_on(request)
    done = await _agent_move(request, moves.withdraw(agent_id, time.time()), ended="declined")
    request.config_dict[ROUTING_METRICS].offers.labels("declined").inc()
    return json_answer(done.session)


@routes.post("/api/sessions/{session_name}/transfer")
async def transfer(request: web.Request) -> web.Response:
    principal = require_agent(request)
    limit_actions(request, principal)
    body = await load_body(request, TRANSFER[principal is not None])
    agent_id = acting_agent(principal, body.get("agent_id"))
    note, to_agent = body["note"], body["to_agent_id"]
    settings, metrics = request.config_dict[SETTINGS], request.config_dict[ROUTING_METRICS]
    if to_agent is None:
        move = moves.requeue(agent_id, "transfer", time.time(), note)
        done = await _agent_move(request, move, TRANSFER_NOTICE)
        metrics.requeued.labels("transfer").inc()
        metrics.transfers.labels("queue").inc()
        return json_answer(done.session)
    # Directly to an agent who is not offline; as an offer (auto) to one who is online.
    receiver = (await request.config_dict[AGENTS].get(to_agent))["status"]
    if receiver == "offline" or (settings.assignment == "auto" and receiver != "online"):
        raise ApiError(
            409, "agent_unavailable", f"agent {to_agent} is {receiver}: cannot take a transfer now"
        )
    if settings.assignment == "auto":
        move = moves.transfer_offer(agent_id, to_agent, note, time.time(), settings.offer_timeout)
    else:
        move = moves.transfer(agent_id, to_agent, note)
    done = await counted_move(request, to_agent, move, TRANSFER_NOTICE)
    metrics.transfers.labels("offer" if settings.assignment == "auto" else "agent").inc()
    return json_answer(done.session)


async def served(request: web.Request, done: Transition) -> None:
    """A waiting conversation was taken (a takeover, an accepted offer): its wait, and the
    queue's pace."""
    waiting_since = done.before.get("waiting_since") if done.before is not None else None
    if waiting_since is not None:
        request.config_dict[ROUTING_METRICS].waited.observe(max(0.0, time.time() - waiting_since))
    await note_served(request)


def customer_active(request: web.Request, session_name: str) -> None:
    """The customer wrote: present now. Noted here and reported with the streams' by
    ``watch_customers`` (no Redis call on a message's way). Nothing is noted with
    --customer-idle 0: no report runs then to take the notes away."""
    if request.config_dict[SETTINGS].customer_idle:
        request.config_dict[CUSTOMERS_ACTIVE].add(session_name)


async def customer_arrived(request: web.Request, session_name: str) -> None:
    """A conversation began: its customer's presence is written at once, so that its idle
    deadline exists even if this process dies before its next report (one write per
    conversation, not per message). While the store is away it waits for the report.
    Nothing with --customer-idle 0 (no idle deadlines)."""
    if not request.config_dict[SETTINGS].customer_idle:
        return
    try:
        await request.config_dict[BACKENDS].customers.seen([session_name], time.time())
    except StoreError as exc:
        logger.debug("presence of a new customer left to the next report: %r", exc)
        customer_active(request, session_name)


async def watch_customers(app: web.Application) -> None:
    """Every process serving the chatbot, every quarter of --customer-idle (30 s at most):
    report as present the customers with a stream open here and those active since the last
    report (docs/routing.md, "Customer idle")."""
    active = app[CUSTOMERS_ACTIVE]

    async def one_round() -> None:
        streams = app[STREAMS].open_streams()
        names = active | {s.session[0] for s in streams if s.component == "chatbot" and s.session}
        await app[BACKENDS].customers.seen(sorted(names), time.time())
        active.difference_update(names)

    await every(min(app[SETTINGS].customer_idle / 4, 30.0), one_round, "customer presence", logger)


async def route(app: web.Application) -> None:
    """Every --route-interval: one round of the router."""
    await every(app[SETTINGS].route_interval, lambda: router_of(app).round(time.time()), "routing", logger)
