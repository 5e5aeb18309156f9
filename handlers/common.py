"""What both sub-apps share: request parsing, publishing, and the session read endpoints."""

import json
from typing import Any

from aiohttp import web
from aiohttp.helpers import ChainMapProxy
from marshmallow import ValidationError

from app.backends import Backends
from app.domain.auth import Principal
from app.domain.routing.router import Router, RoutingPolicy
from app.keys import AGENTS, BACKENDS, COMPONENT, ROUTING_METRICS, SETTINGS
from app.web.answers import json_answer
from app.web.errors import ApiError
from handlers.access import acting_agent, check_incarnation, limit_actions, require_agent, require_reader
from handlers.sse import stream_events
from realtime.channels import presence_channel, session_channel
from schemas import AgentActionSchema, TranscriptQuerySchema, is_valid_name
from schemas.fields import NAME_ERROR
from schemas.plain import PlainBody

JSON_TYPES = frozenset({"application/json"})
# Stateless once built; building it deep-copies its fields: built once.
TRANSCRIPT_QUERY = TranscriptQuerySchema()


# An agent's action on a session: the body's agent_id is optional with a token (the token's
# agent acts; one given must agree), required without. Built once (see handlers.workbench).
AGENT_ACTION = {
    True: PlainBody(AgentActionSchema(partial=("agent_id",))),
    False: PlainBody(AgentActionSchema()),
}


# The root app (a background task), or a request's config_dict (a handler in a sub-app).
Config = web.Application | ChainMapProxy


def router_of(app: Config) -> Router:
    settings = app[SETTINGS]
    policy = RoutingPolicy(
        auto=settings.assignment == "auto",
        offer_timeout=settings.offer_timeout,
        wait_timeout=settings.wait_timeout,
        wait_timeout_action=settings.wait_timeout_action,
        customer_idle=settings.customer_idle,
        webhooks=bool(settings.webhook_urls),
    )
    backends = app[BACKENDS]
    return Router(backends.store, app[AGENTS], backends.customers, policy, app[ROUTING_METRICS])


async def agent_acting_on(request: web.Request) -> tuple[str, str]:
    """The session an agent's action is on, and the agent acting (the token's; a body
    ``agent_id`` must agree): checked in the order of every agent action (token, rate, name,
    body)."""
    principal = require_agent(request)
    limit_actions(request, principal)
    name = path_name(request, "session_name")
    body = await load_body(request, AGENT_ACTION[principal is not None])
    return name, acting_agent(principal, body.get("agent_id"))


def backends(request: web.Request) -> Backends:
    return request.config_dict[BACKENDS]


def path_name(request: web.Request, key: str) -> str:
    """A name from the URL, checked before it reaches any key or channel name."""
    value = request.match_info[key]
    if not is_valid_name(value):
        raise ApiError(
            400,
            "invalid_name",
            f"invalid {key}",
            fields={key: [NAME_ERROR]},
        )
    return value


async def load_body(request: web.Request, schema: PlainBody) -> dict[str, Any]:
    """The JSON body validated by ``schema``; an absent body counts as ``{}``."""
    raw = await request.read()  # raises 413 past client_max_size
    if not raw.strip():
        data: Any = {}
    else:
        if request.content_type not in JSON_TYPES:
            raise ApiError(415, "unsupported_media_type", "request body must be application/json")
        try:
            data = json.loads(raw)
            # JSON may escape lone surrogates ("\ud800"), which no UTF-8 text can hold: refuse
            # them here rather than fail after storing, when the event is encoded.
            json.dumps(data, ensure_ascii=False).encode()
        except RecursionError:
            raise ApiError(400, "bad_json", "request body is nested too deeply") from None
        except UnicodeEncodeError:
            raise ApiError(400, "bad_json", "request body holds text that is not valid Unicode") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    loaded: dict[str, Any] = schema.load(data)
    return loaded


def checked_content(request: web.Request, content: str) -> str:
    """Message content within this deployment's limit (the schema's 4,000 is the ceiling)."""
    limit = request.config_dict[SETTINGS].max_message
    if len(content) > limit:
        raise ValidationError({"content": [f"Longer than maximum length {limit}."]})
    return content


async def get_session(request: web.Request) -> web.Response:
    name = path_name(request, "session_name")
    principal = require_reader(request, name)
    session = await backends(request).store.get(name)
    check_incarnation(principal, session)
    return json_answer(session)


async def get_messages(request: web.Request) -> web.Response:
    name = path_name(request, "session_name")
    principal = require_reader(request, name)
    query = TRANSCRIPT_QUERY.load(dict(request.query))
    store = backends(request).store
    if principal is not None and principal.incarnation is not None:
        check_incarnation(principal, await store.get(name))
    # The agents' private notes are in the workbench's transcript, never in the chatbot's.
    notes = request.app[COMPONENT] == "workbench"
    page = await store.messages(name, limit=query["limit"], after=query.get("cursor"), notes=notes)
    return json_answer({"session_name": name, "messages": page.items, "next_cursor": page.next_cursor})


async def session_events(request: web.Request) -> web.StreamResponse:
    name = path_name(request, "session_name")
    principal = require_reader(request, name, query_ok=True)
    incarnation = await _stream_incarnation(request, name, principal)
    channel = session_channel(name)
    # The customer's own streams say, to every process, that the customer is connected.
    customer_side = request.app[COMPONENT] == "chatbot"
    return await stream_events(
        request,
        (channel,),
        {"channels": [channel], "session_name": name},
        principal,
        presence=presence_channel(name) if customer_side else None,
        session=(name, incarnation),
    )


async def _stream_incarnation(request: web.Request, name: str, principal: Principal | None) -> str:
    """The conversation a stream opens on (404 before any stream opens), checked against the
    token. A function of its own so that the session read here is not held, in the stream
    handler's frame, for as long as the stream stays open (about half a KiB per stream)."""
    session = await backends(request).store.get(name)
    check_incarnation(principal, session)
    return session["incarnation"]


def add_session_read_routes(routes: web.RouteTableDef) -> None:
    routes.get("/api/sessions/{session_name}")(get_session)
    routes.get("/api/sessions/{session_name}/messages")(get_messages)
    routes.get("/api/sessions/{session_name}/events")(session_events)
