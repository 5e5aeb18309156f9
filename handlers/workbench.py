"""Agent side, mounted at /workbench: the queue, takeover, live replies, release and close."""

import asyncio
import functools
import time

from aiohttp import web

from app.domain.agents import AtCapacity
from app.domain.store import Action, SessionStore, Status
from app.domain.store.base import MAX_PAGE
from app.keys import AGENT_STREAMS, AGENTS, COMPONENT, ROUTING_METRICS, SOURCE
from app.web.answers import json_answer
from app.web.errors import ApiError
from handlers.access import acting_agent, limit_actions, require_agent, require_supervisor
from handlers.agents import refuse_over_capacity
from handlers.agents import routes as agent_routes
from handlers.announce import message_events, note_events, transition_events
from handlers.common import (
    add_session_read_routes,
    agent_acting_on,
    backends,
    checked_content,
    load_body,
    path_name,
    router_of,
)
from handlers.reads import read_up_to
from handlers.routing import routes as routing_routes
from handlers.routing import served
from handlers.sse import stream_events
from handlers.supervision import routes as supervision_routes
from handlers.typing import signal_typing
from realtime import ids
from realtime.broker import BrokerError
from realtime.channels import (
    BROADCAST,
    SESSION_PATTERN,
    agent_channel,
    presence_channel,
    session_channel,
)
from realtime.events import Event
from schemas import (
    AgentMessageSchema,
    AgentReadSchema,
    SessionListQuerySchema,
    SupervisorQuerySchema,
)
from schemas.plain import PlainBody

routes = web.RouteTableDef()

# A supervisor stream filtered by status follows at most this many pages of that status.
SUPERVISED_PAGES = 10


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    require_agent(request)
    query = SESSION_LIST_QUERY.load(dict(request.query))
    page = await backends(request).store.list_sessions(
        query["status"], limit=query["limit"], after=query.get("cursor")
    )
    return json_answer({"sessions": page.items, "next_cursor": page.next_cursor})


# Schemas are stateless once built, and building one deep-copies its fields (tens of µs a
# request): each is built once. With a token the body may leave agent_id out (the token says
# who acts): the schemas by whether a token came (AGENT_ACTION too, in handlers.common).
AGENT_MESSAGE = {
    True: PlainBody(AgentMessageSchema(partial=("agent_id",))),
    False: PlainBody(AgentMessageSchema()),
}
AGENT_READ = {
    True: PlainBody(AgentReadSchema(partial=("agent_id",))),
    False: PlainBody(AgentReadSchema()),
}
SESSION_LIST_QUERY = SessionListQuerySchema()
SUPERVISOR_QUERY = SupervisorQuerySchema()


async def _agent_action(request: web.Request, action: Action) -> web.Response:
    name, agent_id = await agent_acting_on(request)
    store, agents = backends(request).store, request.config_dict[AGENTS]
    counted = False
    if action == "takeover":
        try:
            counted = await agents.reserve(agent_id, name)  # counted before it can commit: never over
        except AtCapacity as exc:
            raise refuse_over_capacity(exc) from exc
    try:
        transition = await store.apply(
            name, action, agent_id=agent_id, announce=transition_events(request, action, agent_id)
        )
    except BaseException:
        if counted:  # a takeover that did not commit gives back the count it took
            await router_of(request.config_dict).uncount(agent_id, name)
        raise
    if action in ("release", "close") and transition.previous_status == "agent_active":
        await agents.release(agent_id, name)  # only the holder may release or close it
    if action == "takeover" and transition.changed and transition.previous_status == "waiting_agent":
        await served(request, transition)
    return json_answer(transition.session)


@routes.post("/api/sessions/{session_name}/takeover")
async def takeover(request: web.Request) -> web.Response:
    return await _agent_action(request, "takeover")


@routes.post("/api/sessions/{session_name}/release")
async def release(request: web.Request) -> web.Response:
    return await _agent_action(request, "release")


@routes.post("/api/sessions/{session_name}/close")
async def close(request: web.Request) -> web.Response:
    return await _agent_action(request, "close")


@routes.post("/api/sessions/{session_name}/messages")
async def agent_message(request: web.Request) -> web.Response:
    principal = require_agent(request)
    limit_actions(request, principal)
    name = path_name(request, "session_name")
    body = await load_body(request, AGENT_MESSAGE[principal is not None])
    agent_id = acting_agent(principal, body.get("agent_id"))
    session, message = await backends(request).store.add_message(
        name,
        "agent",
        checked_content(request, body["content"]),
        agent_id=agent_id,
        announce=message_events(request),
    )
    due = session.pop("answer_due", None)  # the session as the message left it
    if due is not None:  # the first word of the agent holding it (the store cleared it once)
        request.config_dict[ROUTING_METRICS].first_answer.observe(max(0.0, time.time() - due))
    return json_answer({"session": session, "message": message})


@routes.post("/api/sessions/{session_name}/notes")
async def agent_note(request: web.Request) -> web.Response:
    """A private note on the conversation, by any agent: in the workbench's transcript and on
    the agents' and supervisors' streams, never anywhere a customer reads."""
    principal = require_agent(request)
    limit_actions(request, principal)
    name = path_name(request, "session_name")
    body = await load_body(request, AGENT_MESSAGE[principal is not None])
    agent_id = acting_agent(principal, body.get("agent_id"))
    content = checked_content(request, body["content"])
    store = backends(request).store
    session, note = await store.add_message(
        name, "note", content, agent_id=agent_id, announce=note_events(request)
    )
    return json_answer({"session": session, "message": note})


@routes.post("/api/sessions/{session_name}/typing")
async def agent_typing(request: web.Request) -> web.Response:
    """The agent holding the conversation is writing: the customer hears it."""
    name, agent_id = await agent_acting_on(request)
    session = await backends(request).store.get(name)
    if session["status"] != "agent_active" or session["agent_id"] != agent_id:
        raise ApiError(409, "conflict", "only the agent holding the conversation types to its customer")
    return json_answer(await signal_typing(request, name, "agent", agent_id))


@routes.post("/api/sessions/{session_name}/read")
async def agent_read(request: web.Request) -> web.Response:
    """The agent holding the conversation has read it up to a message: the customer hears it,
    and the conversation's unread count becomes what follows that message."""
    principal = require_agent(request)
    limit_actions(request, principal)
    name = path_name(request, "session_name")
    body = await load_body(request, AGENT_READ[principal is not None])
    agent_id = acting_agent(principal, body.get("agent_id"))
    return json_answer(await read_up_to(request, name, "agent", body["up_to"], agent_id=agent_id))


@routes.get("/api/sessions/{session_name}/stream")
async def stream_health(request: web.Request) -> web.Response:
    """Who is listening to a session, across every process: so that an agent sees that the
    customer has left before typing an answer. Without Redis (in memory, or while it is away)
    it answers from what this process knows, and says so in ``scope``."""
    require_agent(request)
    name = path_name(request, "session_name")
    await backends(request).store.get(name)  # 404 for an unknown session
    broker = backends(request).broker
    channel, presence = session_channel(name), presence_channel(name)
    scope = "process" if backends(request).mode == "memory" else "deployment"
    try:
        processes, customer_processes, last_id = await asyncio.gather(
            broker.subscribed_processes(channel),
            broker.subscribed_processes(presence),
            broker.last_event_id(channel),
        )
    except BrokerError:
        # Redis went away between the mode check and the counts: this process's view.
        scope, last_id = "process", None
        processes = 1 if broker.local_subscribers(channel) else 0
        customer_processes = broker.local_subscribers(presence)
    last_event = None
    if last_id is not None:
        last_event = {"id": last_id, "time": ids.parse(last_id)[0] / 1000}
    return json_answer(
        {
            "session_name": name,
            # Redis counts pub/sub connections: one per process, whatever its number of streams.
            "subscribed_processes": processes,
            "streams_in_this_process": broker.local_subscribers(channel),
            "customer_connected": customer_processes > 0,
            "last_event": last_event,
            "scope": scope,
        }
    )


@routes.get("/api/events")
async def supervisor_events(request: web.Request) -> web.StreamResponse:
    """Every session's events, for a supervisor's wall board or an audit (a supervisor's token:
    notes, whispers and barges are on it): one pattern
    subscription (PSUBSCRIBE sse:session:*) on the process's pub/sub connection (on a Redis
    Cluster, the sessions feed), with the framing, heartbeats, slow-consumer cut-off and
    resume of every stream."""
    principal = require_supervisor(request, query_ok=True)
    query = dict(request.query)
    names = [*request.query.getall("session", []), *query.pop("sessions", "").split(",")]
    for stream_parameter in ("session", "token", "last_event_id"):
        query.pop(stream_parameter, None)
    wanted = SUPERVISOR_QUERY.load({**query, "sessions": [n for n in names if n]})
    status, sessions = wanted["status"], set(wanted["sessions"])
    accepts = None
    if status is not None or sessions:
        members = None
        if status is not None:
            members = await _members(backends(request).store, status)
        accepts = functools.partial(_supervised, status, sessions, members)
    connected = {
        "channels": [SESSION_PATTERN],
        "filter": {"status": status, "sessions": sorted(sessions)},
    }
    return await stream_events(request, (SESSION_PATTERN,), connected, principal, accepts=accepts)


async def _members(store: SessionStore, status: Status) -> set[str]:
    """The sessions in ``status`` now, up to SUPERVISED_PAGES pages (a supervisor watching
    more than that many sessions at once filters by name instead)."""
    members: set[str] = set()
    cursor = None
    for _ in range(SUPERVISED_PAGES):
        page = await store.list_sessions(status, limit=MAX_PAGE, after=cursor)
        members.update(s["session_name"] for s in page.items)
        if (cursor := page.next_cursor) is None:
            break
    return members


def _supervised(status: str | None, sessions: set[str], members: set[str] | None, event: Event) -> bool:
    """Whether a supervisor stream passes ``event``. ``members`` (the sessions in ``status``,
    from the queue when the stream opened) follows the status changes that pass by; a
    session's change into or out of the status is shown."""
    if event.envelope["type"] == "agent_status":
        return True  # agents' presence: every supervisor sees it, whatever its filter
    name = event.envelope["payload"].get("session_name")
    if sessions and name not in sessions:
        return False
    if members is None:
        return True
    if event.envelope["type"] == "status_change":
        was = name in members
        if event.envelope["payload"].get("status") == status:
            members.add(name)
        else:
            members.discard(name)
        return was or name in members
    return name in members


@routes.get("/api/agents/{agent_id}/events")
async def agent_events(request: web.Request) -> web.StreamResponse:
    agent_id = path_name(request, "agent_id")
    principal = require_agent(request, query_ok=True)
    if principal is not None and principal.subject != agent_id:
        raise ApiError(403, "forbidden", "an agent's stream is its own")
    channels = (agent_channel(agent_id), BROADCAST)
    connected = {"channels": list(channels), "agent_id": agent_id}
    presence = request.config_dict[AGENT_STREAMS]
    presence.opened(agent_id)  # seen by the presence watch while the stream is open
    try:
        return await stream_events(request, channels, connected, principal)
    finally:
        presence.closed(agent_id)


add_session_read_routes(routes)


def create_workbench_app() -> web.Application:
    app = web.Application()
    app[SOURCE] = "agent_workbench"
    app[COMPONENT] = "workbench"
    app.add_routes(routes)
    app.add_routes(agent_routes)
    app.add_routes(routing_routes)
    app.add_routes(supervision_routes)
    return app
