"""Field types shared by the request and event schemas."""

import re
from collections.abc import Mapping
from typing import Any

from marshmallow import fields, validate

from app.domain.pages import DEFAULT_PAGE, MAX_PAGE

# \Z, not $: "$" also matches before a trailing newline, which would let "abc\n" through
# into a channel or key name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
# What a client is told of a bad name (a body field, or a name in the URL).
NAME_ERROR = "must match ^[A-Za-z0-9_-]{1,64}$ (letters, digits, _ and -)"

SESSION_STATUSES = ("bot_active", "waiting_agent", "agent_active", "closed")
MESSAGE_ROLES = ("customer", "bot", "agent")
# A transcript also keeps agents' private notes (docs/api.md, "Private notes"): never a customer's.
NOTE_ROLE = "note"
TRANSCRIPT_ROLES = (*MESSAGE_ROLES, NOTE_ROLE)
MAX_CONTENT = 4000
# An agent's presence, and the most conversations one may be given to hold at once.
AGENT_STATUSES = ("online", "away", "offline")
MAX_CAPACITY = 100
MAX_REASON = 500
MAX_SUMMARY = 2000
# A closed conversation's rating by its customer (app.domain.rating): a score, and a comment.
MIN_SCORE, MAX_SCORE = 1, 5
MAX_COMMENT = 1000

# A listing's cursor, as a client sends back the ``next_cursor`` it was given: a queue position
# (digits) or a message id (16 hex digits). Opaque to clients; bounded here before any store
# reads it (a well-formed cursor the listing did not hand out is the store's 400 invalid_cursor).
CURSOR_PATTERN = re.compile(r"[0-9a-f]{1,32}\Z")
CURSOR_ERROR = "must be the next_cursor of a page of this listing (1 to 32 of 0-9 and a-f)"
LIMIT_ERROR = f"Must be a whole number from 1 to {MAX_PAGE}."
# What ``limit=`` may look like before it is read as a number: int() would also take " 7",
# "+7", "7_0" and the digits of other scripts.
QUERY_DIGITS = re.compile(r"[0-9]{1,9}\Z")


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and NAME_PATTERN.match(value) is not None


def Name(**kwargs: Any) -> fields.String:
    """A session name or agent id: safe to embed in a Redis key or channel name."""
    return fields.String(
        # Regexp formats its error (str.format): the pattern's braces are escaped.
        validate=validate.Regexp(NAME_PATTERN, error=NAME_ERROR.replace("{", "{{").replace("}", "}}")),
        **kwargs,
    )


# A transcript message's id (app.domain.store.rules.new_message): 16 hex digits.
MESSAGE_ID_PATTERN = re.compile(r"[0-9a-f]{16}\Z")


def MessageId(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Regexp(MESSAGE_ID_PATTERN, error="must be a message's id (16 of 0-9 and a-f)"),
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


class QueryInteger(fields.Integer):
    """An integer written in a query string: ASCII digits and nothing else."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if not isinstance(value, str) or QUERY_DIGITS.match(value) is None:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def PageLimit(**kwargs: Any) -> QueryInteger:
    """``?limit=``: how many items a page holds at most."""
    return QueryInteger(
        load_default=DEFAULT_PAGE,
        validate=validate.Range(min=1, max=MAX_PAGE, error=LIMIT_ERROR),
        error_messages={"invalid": LIMIT_ERROR},
        metadata={
            "description": f"How many items the page holds at most: 1 to {MAX_PAGE:,} "
            f"({DEFAULT_PAGE} when absent). A page may hold fewer, even none, with more to come: "
            "only `next_cursor: null` ends the listing."
        },
        **kwargs,
    )


def Cursor(**kwargs: Any) -> fields.String:
    """A listing's position: ``?cursor=`` in a request, ``next_cursor`` in an answer."""
    return fields.String(validate=validate.Regexp(CURSOR_PATTERN, error=CURSOR_ERROR), **kwargs)
