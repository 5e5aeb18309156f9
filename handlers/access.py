"""Who may do what: authentication from tokens, authorization per endpoint, and the
per-token rate limit on actions. Under ``--insecure`` every check passes (and says so)."""

from aiohttp import web
from marshmallow import ValidationError

from app.domain.auth import Principal, TokenError
from app.domain.store import Session
from app.keys import COMPONENT, RATE_LIMITER, TOKENS
from app.web.errors import ApiError

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="switchboard"'}


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
    if principal is not None and principal.incarnation not in (None, session["incarnation"]):
        raise ApiError(
            401,
            "unauthorized",
            "this token belongs to an earlier conversation under this name",
            headers=CHALLENGE,
        )


def require_agent(request: web.Request, *, query_ok: bool = False) -> Principal | None:
    """Any agent (the workbench is for agents only)."""
    principal = who(request, query_ok=query_ok)
    if principal is not None and principal.kind != "agent":
        raise ApiError(403, "forbidden", "the workbench needs an agent token")
    return principal


def require_reader(request: web.Request, session_name: str, *, query_ok: bool = False) -> Principal | None:
    """A session's state, transcript and stream: its customer on the chatbot side, any agent on
    the workbench side."""
    if request.app[COMPONENT] == "chatbot":
        return require_session(request, session_name, query_ok=query_ok)
    return require_agent(request, query_ok=query_ok)


def acting_agent(principal: Principal | None, agent_id: str | None) -> str:
    """The agent an action is done as: the token's; a body ``agent_id`` must agree with it."""
    if principal is None:
        if agent_id is None:
            raise ValidationError({"agent_id": ["Missing data for required field."]})
        return agent_id
    if agent_id is not None and agent_id != principal.subject:
        raise ApiError(403, "forbidden", "agent_id does not match the token")
    return principal.subject


def limit_actions(request: web.Request, principal: Principal | None) -> None:
    """429 past the per-token action rate. Requests without a token (under --insecure, or a
    customer starting a conversation) are not limited here: behind a proxy every client has the
    proxy's address, so a per-address limit belongs to the proxy (nginx limit_req)."""
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
