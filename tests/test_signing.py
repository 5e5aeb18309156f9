"""Signed bodies (app/web/signing.py): what a webhook bot or receiver checks. A signature holds
for its body and timestamp only, within the tolerance, with any of the secrets of a rotation;
everything else is refused with a reason."""

import hashlib
import hmac

import pytest

from app.web.signing import TOLERANCE, BadSignature, sign, verify

NOW = 1_800_000_000.0
SECRET = b"s" * 32
OLD_SECRET = b"o" * 32
BODY = b'{"session_name":"s1","message":{"content":"hi"}}'


def test_a_signed_body_verifies_and_the_signature_is_the_documented_hmac() -> None:
    header = sign([SECRET], BODY, NOW)
    assert verify([SECRET], BODY, header, NOW) == int(NOW)
    # What docs/bots.md tells a receiver to compute: HMAC-SHA256 over "<t>." + body.
    expected = hmac.new(SECRET, f"{int(NOW)}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={int(NOW)},v1={expected}"


@pytest.mark.parametrize(
    ("body", "secrets", "now", "why"),
    [
        (BODY + b" ", [SECRET], NOW, "does not match"),
        (BODY, [b"x" * 32], NOW, "does not match"),
        (BODY, [SECRET], NOW + TOLERANCE + 1, "from now"),
        (BODY, [SECRET], NOW - TOLERANCE - 1, "from now"),
    ],
)
def test_another_body_secret_or_time_is_refused(
    body: bytes, secrets: list[bytes], now: float, why: str
) -> None:
    header = sign([SECRET], BODY, NOW)
    with pytest.raises(BadSignature, match=why):
        verify(secrets, body, header, now)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "no Switchboard-Signature"),
        ("", "no Switchboard-Signature"),
        ("v1=abc", "no timestamp"),
        (f"t={int(NOW)}", "no v1="),
        ("t=soon,v1=abc", "whole number"),
        ("t=-5,v1=abc", "whole number"),
        ("t=１２３,v1=abc", "whole number"),
        (f"t={int(NOW)},v1", "malformed"),
        (f"t={int(NOW)},v1=" + "0" * 64, "does not match"),
    ],
)
def test_malformed_signatures_are_refused_with_a_reason(header: str | None, why: str) -> None:
    with pytest.raises(BadSignature, match=why):
        verify([SECRET], BODY, header, NOW)


def test_a_secret_rotates_without_a_gap() -> None:
    """During a rotation the sender signs with both; a receiver on either secret accepts, and
    a receiver holding both accepts a sender on either."""
    both = sign([SECRET, OLD_SECRET], BODY, NOW)
    assert verify([OLD_SECRET], BODY, both, NOW) == int(NOW)
    assert verify([SECRET], BODY, both, NOW) == int(NOW)
    assert verify([SECRET, OLD_SECRET], BODY, sign([OLD_SECRET], BODY, NOW), NOW) == int(NOW)
    with pytest.raises(ValueError, match="at least one secret"):
        sign([], BODY, NOW)
