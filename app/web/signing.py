"""Signed HTTP bodies between Switchboard and the services it calls (a webhook bot, outbound
webhook receivers), so that a receiver can tell a request came from this deployment and is not
a replay.

The header is ``Switchboard-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
HMAC-SHA256 with the shared secret over ``<t>.`` followed by the exact body bytes, as Stripe and
Slack sign theirs: the timestamp is signed with the body, so an old request cannot be sent
again with a fresh time, and a receiver refuses one older (or newer) than its tolerance. Several
``v1`` entries may be present, one per secret, so that a secret can be rotated without a window
in which either side refuses the other.
"""

import hashlib
import hmac
from collections.abc import Iterable, Sequence

SIGNATURE_HEADER = "Switchboard-Signature"
TOLERANCE = 300.0  # seconds a signed request is accepted either side of the receiver's clock
SCHEME = "v1"


class BadSignature(ValueError):
    """The request's signature is missing, malformed, stale or does not match."""


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[bytes], body: bytes, now: float) -> str:
    """The header value for ``body`` sent at ``now``: one ``v1`` per secret (the first is the
    current one; more while a rotation is under way)."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    timestamp = int(now)
    return ",".join(
        [f"t={timestamp}", *(f"{SCHEME}={_digest(secret, timestamp, body)}" for secret in secrets)]
    )


def verify(
    secrets: Iterable[bytes], body: bytes, header: str | None, now: float, tolerance: float = TOLERANCE
) -> int:
    """Check ``header`` against ``body`` and any of ``secrets``; returns the signed timestamp.
    Raises BadSignature saying why not (a receiver answers 401 with it)."""
    if not header:
        raise BadSignature(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise BadSignature(f"malformed {SIGNATURE_HEADER} item {item.strip()[:20]!r}")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise BadSignature("the signature's timestamp is not a whole number of seconds")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise BadSignature("the signature has no timestamp (t=)")
    if not signatures:
        raise BadSignature(f"the signature has no {SCHEME}= entry")
    if abs(now - timestamp) > tolerance:
        raise BadSignature(f"the signature's timestamp is more than {tolerance:.0f} s from now")
    for secret in secrets:
        expected = _digest(secret, timestamp, body)
        if any(hmac.compare_digest(expected, signature) for signature in signatures):
            return timestamp
    raise BadSignature("the signature does not match the body")
