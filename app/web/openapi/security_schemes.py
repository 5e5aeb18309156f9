"""What the document says about tokens: the security schemes, the requirement of each kind of
operation, and the statuses only a process that requires tokens answers (a process run with
``--insecure`` documents none of them)."""

from typing import Any, Literal

# Who may call an operation: nobody in particular, anyone (a token is used if given), the
# session's customer, an agent (a supervisor too), or a supervisor only.
Auth = Literal["none", "optional", "customer", "agent", "supervisor"]

# Statuses that only a process requiring tokens answers (tokens, per-token limits).
TOKEN_STATUSES = frozenset({401, 403, 429})


def security_schemes() -> dict[str, dict[str, Any]]:
    """The schemes, by name: the bearer header, and ``?token=`` on event streams."""
    return {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A customer token (bound to one session), an agent token or a supervisor token.",
        },
        "streamToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "The same token as `?token=`, on event streams only.",
        },
    }


def security_requirements(auth: Auth, query_token: bool) -> list[dict[str, list[str]]]:
    """An operation's ``security``: any one of the entries will do (``{}``: no token at all).
    ``query_token``: the token may come as ``?token=`` (event streams: EventSource cannot set
    headers)."""
    if auth == "none":
        return []
    schemes: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    if query_token:
        schemes.append({"streamToken": []})
    if auth == "optional":
        schemes.insert(0, {})
    return schemes
