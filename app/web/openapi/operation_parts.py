"""The operation table's parts (app.web.openapi.operations and the tables it gathers): what a
documented operation says, and the error lists and texts that many operations share."""

from dataclasses import dataclass
from typing import Literal

from marshmallow import Schema

from app.domain.store.base import DEFAULT_PAGE, MAX_PAGE
from app.web.openapi.security_schemes import Auth

# The kind of event stream an operation answers with (schema_components.STREAM_UNIONS).
Stream = Literal["session", "workbench_session", "agent", "supervisor"]


@dataclass(frozen=True, slots=True)
class Answer:
    """A documented non-error answer."""

    status: int
    description: str
    schema: str | None = None  # a components/schemas name, for application/json
    examples: tuple[str, ...] = ()  # examples.RESPONSE_EXAMPLES names
    media: str | None = "application/json"  # None: no body
    headers: tuple[str, ...] = ()  # components/headers names
    example: str | None = None  # a literal example (non-JSON media)


@dataclass(frozen=True, slots=True)
class Operation:
    """A documented operation (its path parameters come from the route's template)."""

    tag: str
    summary: str
    description: str
    answers: tuple[Answer, ...]
    auth: Auth = "none"
    errors: tuple[str, ...] = ()  # error_examples.ERROR_EXAMPLES names; grouped by status
    body: str | None = None  # request schema component
    body_examples: tuple[str, ...] = ()  # examples.REQUEST_EXAMPLES names
    query: type[Schema] | None = None
    stream: Stream | None = None


BODY_ERRORS = ("error.bad_json", "error.body_too_large", "error.unsupported_media_type")
TOKEN_ERRORS = ("error.unauthorized", "error.unauthorized.expired")
CUSTOMER_ERRORS = (*TOKEN_ERRORS, "error.forbidden.session")
AGENT_ERRORS = (*TOKEN_ERRORS, "error.forbidden.workbench")
SUPERVISOR_ERRORS = (*AGENT_ERRORS, "error.forbidden.supervisor")
STREAM_ERRORS = ("error.too_many_streams.token", "error.too_many_streams.process", "error.unavailable")
SESSION_STREAM_ANSWER = Answer(200, "The session's event stream.")
PAGE_ERRORS = ("error.validation.limit", "error.validation.cursor", "error.validation.unknown_query")
# How a listing is paged, said the same way by each paged operation.
PAGING = (
    f"`limit` (1 to {MAX_PAGE:,}, default {DEFAULT_PAGE}) and `cursor` (a page's `next_cursor`: the "
    "page after it); any other query parameter is a 400. Follow `next_cursor` until it is null: "
    "only null means the end, a page may hold fewer than `limit` items."
)
AGENT_STREAM_ANSWER = Answer(200, "The agent's event stream.")
