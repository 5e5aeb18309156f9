"""Signed tokens (JWT, HS256): who a request speaks for.

Three kinds: a session token speaks for one customer conversation, an agent token for one agent,
a supervisor token for a supervisor: an agent with the rights of docs/security.md's table
(whisper, barge in, re-assign, the supervisor stream).
The secret signs both; rotating it invalidates every token at once (see docs/security.md).
"""

import re
import time
from dataclasses import dataclass
from typing import Literal

import jwt

from schemas import is_valid_name

Kind = Literal["session", "agent", "supervisor"]
KINDS: tuple[Kind, ...] = ("session", "agent", "supervisor")
# The kinds that work the workbench: a supervisor is an agent too.
STAFF: frozenset[Kind] = frozenset({"agent", "supervisor"})
ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32
INCARNATION = re.compile(r"[0-9a-f]{16}")


class TokenError(Exception):
    """The token is missing its parts, badly signed, expired, or not ours (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Kind
    subject: str
    # A session token's conversation (its session's incarnation); None in an agent token, and
    # in a session token minted by the CLI without one (it speaks for the name).
    incarnation: str | None = None

    @property
    def key(self) -> str:
        """One string per principal, for per-token limits."""
        return f"{self.kind}:{self.subject}"


class TokenAuthority:
    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the secret must be at least {MIN_SECRET_LENGTH} characters")
        self._secret = secret

    def mint(self, kind: Kind, subject: str, ttl: float, incarnation: str | None = None) -> str:
        if kind not in KINDS or not is_valid_name(subject) or ttl < 1:
            raise ValueError("a token needs a kind, a valid name and a lifetime of 1 s or more")
        if incarnation is not None and (kind != "session" or not INCARNATION.fullmatch(incarnation)):
            raise ValueError("an incarnation is 16 hex digits, and only session tokens carry one")
        now = int(time.time())
        claims: dict[str, str | int] = {"typ": kind, "sub": subject, "iat": now, "exp": now + int(ttl)}
        if incarnation is not None:
            claims["inc"] = incarnation
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],  # never "none", never what the token says
                options={"require": ["exp", "iat", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidTokenError:
            raise TokenError("invalid token") from None
        kind, subject, incarnation = claims.get("typ"), claims.get("sub"), claims.get("inc")
        if kind not in KINDS or not isinstance(subject, str) or not is_valid_name(subject):
            raise TokenError("invalid token")
        if incarnation is not None and (
            kind != "session" or not isinstance(incarnation, str) or not INCARNATION.fullmatch(incarnation)
        ):
            raise TokenError("invalid token")
        return Principal(kind, subject, incarnation)
