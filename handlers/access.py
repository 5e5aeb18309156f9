"""Who may do what: authentication from tokens, authorization per endpoint, the per-token
rate limit on actions and the per-address limit on conversation starts and escalations. Under
``--insecure`` every token check passes (and says so); the per-address limit still holds."""

from aiohttp import web
from marshmallow import ValidationError

from app.domain.auth import STAFF, Principal, TokenError
from app.domain.store import Session, rules
from app.keys import COMPONENT, RATE_LIMITER, START_LIMITER, STARTS_REFUSED, TOKENS, TRUSTED_PROXIES
from app.web.client_address import client_address, limit_key
from app.web.errors import CHALLENGE, ApiError
from app.web.limits import START_RATE_MESSAGE, RateLimiter, StartKind


def who(request: web.Request, *, query_ok: bool = False, required: bool = True) -> Principal | None:
    """The principal the request's token speaks for; None under --insecure, or when no token
    is given and ``required`` is False. Raises 401 for a missing, malformed, badly signed or
    expired token.

    ``query_ok``: the token may come as ``?token=`` (SSE only: EventSource cannot set headers).
    """
    authority = request.config_dict.get(TOKENS)
    if authority is None:
        return None
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer <token>'", headers=CHALLENGE)
        token = token.strip()
    elif query_ok and request.query.get("token"):
        token = request.query["token"]
    elif required:
        raise ApiError(401, "unauthorized", "a token is required", headers=CHALLENGE)
    else:
        return None
    try:
        return authority.verify(token)
    except TokenError as exc:
        raise ApiError(401, "unauthorized", str(exc), headers=CHALLENGE) from None


def require_session(request: web.Request, session_name: str, *, query_ok: bool = False) -> Principal | None:
    """Only the customer holding this session's token."""
    return check_session(who(request, query_ok=query_ok), session_name)


def check_session(principal: Principal | None, session_name: str) -> Principal | None:
    if principal is not None and (principal.kind, principal.subject) != ("session", session_name):
        raise ApiError(403, "forbidden", "this token does not grant access to that session")
    return principal


def check_incarnation(principal: Principal | None, session: Session) -> None:
    """A session token minted for an earlier conversation under this name (the session was
    deleted and started again) is refused like an expired one."""
    rules.check_conversation(session, principal.incarnation if principal is not None else None)


def require_agent(request: web.Request, *, query_ok: bool = False) -> Principal | None:
    """Any agent, supervisors included (the workbench is for agents only)."""
    principal = who(request, query_ok=query_ok)
    if principal is not None and principal.kind not in STAFF:
        raise ApiError(403, "forbidden", "the workbench needs an agent token")
    return principal


def require_supervisor(request: web.Request, *, query_ok: bool = False) -> Principal | None:
    """A supervisor (docs/security.md, "Who may do what"): an agent's token is a 403."""
    principal = require_agent(request, query_ok=query_ok)
    if principal is not None and principal.kind != "supervisor":
        raise ApiError(403, "forbidden", "this needs a supervisor token")
    return principal


def require_reader(request: web.Request, session_name: str, *, query_ok: bool = False) -> Principal | None:
    """A session's state, transcript and stream: its customer on the chatbot side, any agent on
    the workbench side."""
    if request.app[COMPONENT] == "chatbot":
        return require_session(request, session_name, query_ok=query_ok)
    return require_agent(request, query_ok=query_ok)


def acting_agent(principal: Principal | None, agent_id: str | None, field: str = "agent_id") -> str:
    """The agent (or supervisor: ``field`` supervisor_id) an action is done as: the token's; a
    body's id must agree with it."""
    if principal is None:
        if agent_id is None:
            raise ValidationError({field: ["Missing data for required field."]})
        return agent_id
    if agent_id is not None and agent_id != principal.subject:
        raise ApiError(403, "forbidden", f"{field} does not match the token")
    return principal.subject


def limit_actions(request: web.Request, principal: Principal | None) -> None:
    """429 past the per-token action rate. Requests without a token (under --insecure, or a
    customer starting a conversation) are not limited here: what an anonymous client can do
    (start conversations, ask for a human) is limited per client address (``limit_starts``)."""
    if principal is None:
        return
    wait = request.config_dict[RATE_LIMITER].acquire(principal.key)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            "too many requests; slow down",
            headers={"Retry-After": request.config_dict[RATE_LIMITER].retry_after(wait)},
        )


def address_of(request: web.Request) -> str:
    """The key of the request's client address: the peer, or what ``X-Forwarded-For`` says
    when the peer is a ``--trusted-proxy`` (see app.web.client_address)."""
    forwarded = request.headers.getall("X-Forwarded-For", [])
    proxies = request.config_dict[TRUSTED_PROXIES]
    return limit_key(client_address(request.remote, forwarded, proxies))


def start_wait(request: web.Request, kind: StartKind) -> float:
    """Take one from the client address's budget of starts and escalations: 0 if allowed, else
    the seconds to wait (and the refusal is counted)."""
    wait = request.config_dict[START_LIMITER].acquire(address_of(request))
    if wait > 0:
        request.config_dict[STARTS_REFUSED].count(kind)
    return wait


def limit_starts(request: web.Request, kind: StartKind) -> None:
    """429 past ``--start-rate``: conversations started or escalated from one client address,
    with or without a token (a token is one conversation; an address could open thousands)."""
    wait = start_wait(request, kind)
    if wait > 0:
        raise ApiError(
            429, "rate_limited", START_RATE_MESSAGE, headers={"Retry-After": RateLimiter.retry_after(wait)}
        )
