"""A supervisor's actions on a conversation (docs/security.md, "Who may do what"): whisper to
the agent holding it, barge in (take it over from that agent), re-assign it. An agent's token is
a 403 for each; under --insecure the body's ``supervisor_id`` says who acts."""

import functools
import logging
import time
from typing import Any

from aiohttp import web

from app.domain import announcements
from app.domain.routing import moves
from app.domain.store import Session
from app.keys import AGENTS, ROUTING_METRICS, SOURCE
from app.web.answers import json_answer
from app.web.errors import ApiError
from handlers.access import acting_agent, limit_actions, require_supervisor
from handlers.common import backends, checked_content, load_body, path_name
from handlers.routing import counted_move
from schemas import ReassignSchema, SupervisorActionSchema, WhisperSchema
from schemas.plain import PlainBody

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# With a token the body may leave supervisor_id out (the token says who acts).
SUPERVISOR_ACTION = {
    True: PlainBody(SupervisorActionSchema(partial=("supervisor_id",))),
    False: PlainBody(SupervisorActionSchema()),
}
WHISPER = {True: PlainBody(WhisperSchema(partial=("supervisor_id",))), False: PlainBody(WhisperSchema())}
REASSIGN = {True: PlainBody(ReassignSchema(partial=("supervisor_id",))), False: PlainBody(ReassignSchema())}

BARGE_NOTICE = "A supervisor has joined the conversation."
REASSIGN_NOTICE = "You are being connected to another agent."


async def _supervisor_acting_on(
    request: web.Request, schemas: dict[bool, PlainBody]
) -> tuple[str, str, dict[str, Any], Session]:
    """The session, the supervisor acting, the body, and the session as it is now (its holder
    is what the move checks): in the order of every action (token, rate, name, body)."""
    principal = require_supervisor(request)
    limit_actions(request, principal)
    name = path_name(request, "session_name")
    body = await load_body(request, schemas[principal is not None])
    supervisor = acting_agent(principal, body.get("supervisor_id"), "supervisor_id")
    return name, supervisor, body, await backends(request).store.get(name)


def _holder(session: Session) -> str:
    if session["status"] != "agent_active" or session["agent_id"] is None:
        raise ApiError(409, "conflict", f"no agent holds this conversation (it is {session['status']})")
    return session["agent_id"]


@routes.post("/api/sessions/{session_name}/whisper")
async def whisper(request: web.Request) -> web.Response:
    """A note only the holding agent (and the supervisors) see: on the holder's own stream,
    never on the session's channel, never in the transcript."""
    name, supervisor, body, session = await _supervisor_acting_on(request, WHISPER)
    content = checked_content(request, body["content"])
    holder = _holder(session)
    announce = functools.partial(
        announcements.of_whisper, supervisor_id=supervisor, content=content, source=request.app[SOURCE]
    )
    done = await backends(request).store.change(name, moves.whispered(holder), announce=announce)
    request.config_dict[ROUTING_METRICS].supervised.labels("whisper").inc()
    return json_answer(done.session)


@routes.post("/api/sessions/{session_name}/barge")
async def barge(request: web.Request) -> web.Response:
    """The supervisor takes the conversation over from its holder: the holder is told (barge on
    its stream, agent_left), the customer too (agent_left, agent_joined, a notice), and the
    supervisors get the audit event."""
    name, supervisor, _, session = await _supervisor_acting_on(request, SUPERVISOR_ACTION)
    holder = _holder(session)
    audit = announcements.of_barge(name, supervisor_id=supervisor, holder=holder, source=request.app[SOURCE])
    done = await counted_move(request, supervisor, moves.barge(holder, supervisor), BARGE_NOTICE, also=audit)
    request.config_dict[ROUTING_METRICS].supervised.labels("barge").inc()
    logger.info("session %s: supervisor %s barged in on agent %s", name, supervisor, holder)
    return json_answer(done.session)


@routes.post("/api/sessions/{session_name}/reassign")
async def reassign(request: web.Request) -> web.Response:
    """The supervisor gives a held or waiting conversation to an agent (directly, whatever the
    assignment), or a held one back to the front of the queue."""
    name, supervisor, body, session = await _supervisor_acting_on(request, REASSIGN)
    holder = session["agent_id"] if session["status"] == "agent_active" else None
    to_agent, note = body["to_agent_id"], body["note"]
    move = moves.reassign(holder, to_agent, note, time.time())
    metrics = request.config_dict[ROUTING_METRICS]
    if to_agent is None:
        done = await counted_move(request, None, move, REASSIGN_NOTICE)
        metrics.requeued.labels("reassign").inc()
        metrics.transfers.labels("queue").inc()
    else:
        receiver = (await request.config_dict[AGENTS].get(to_agent))["status"]
        if receiver == "offline":
            raise ApiError(409, "agent_unavailable", f"agent {to_agent} is offline: cannot take it now")
        done = await counted_move(request, to_agent, move, REASSIGN_NOTICE)
        metrics.transfers.labels("agent").inc()
    metrics.supervised.labels("reassign").inc()
    logger.info("session %s: supervisor %s re-assigned it", name, supervisor)
    return json_answer(done.session)
