"""Field types shared by the request and event schemas."""

import re
from typing import Any

from marshmallow import fields, validate

# \Z, not $: "$" also matches before a trailing newline, which would let "abc\n" through
# into a channel or key name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
# What a client is told of a bad name (a body field, or a name in the URL).
NAME_ERROR = "must match ^[A-Za-z0-9_-]{1,64}$ (letters, digits, _ and -)"

SESSION_STATUSES = ("bot_active", "waiting_agent", "agent_active", "closed")
MESSAGE_ROLES = ("customer", "bot", "agent")
MAX_CONTENT = 4000
MAX_REASON = 500


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and NAME_PATTERN.match(value) is not None


def Name(**kwargs: Any) -> fields.String:
    """A session name or agent id: safe to embed in a Redis key or channel name."""
    return fields.String(
        # Regexp formats its error (str.format): the pattern's braces are escaped.
        validate=validate.Regexp(NAME_PATTERN, error=NAME_ERROR.replace("{", "{{").replace("}", "}}")),
        **kwargs,
    )


def Content(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Length(min=1, max=MAX_CONTENT),
        **kwargs,
    )


def UnixTime(**kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=0), **kwargs)


def Status(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(SESSION_STATUSES), **kwargs)
