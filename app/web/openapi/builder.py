"""Turning the routes a process serves and the operation table into the OpenAPI document.

The paths come from the app's router (``routes_of``); each is described by its entry in
``operations.OPERATIONS``. A route without an entry still appears, marked ``x-undocumented``
(the test suite fails on it), so a new route cannot stay undocumented unnoticed; an entry
without a route (the other sub-app's, in a one-component process) is left out.

The document says what the answering process does: under ``--insecure`` it documents no
security, no 401/403 answers, no 429 but the per-address limit's and no token-only examples,
and ``agent_id`` is then required in workbench bodies (with a token it is optional: the agent
is the token's).
"""

import copy
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from app.keys import SETTINGS, TOKENS
from app.process.settings import COMPONENTS
from app.web.middlewares import REQUEST_ID_HEADER
from app.web.openapi.error_examples import ERROR_EXAMPLES
from app.web.openapi.event_examples import EVENT_EXAMPLES, STREAM_EXAMPLES, wire_text
from app.web.openapi.examples import (
    REQUEST_EXAMPLES,
    RESPONSE_EXAMPLES,
    Example,
)
from app.web.openapi.info import (
    OPENAPI_VERSION,
    TITLE,
    info_description,
    package_version,
)
from app.web.openapi.operation_parts import Answer, Operation
from app.web.openapi.operations import OPERATIONS, STATUS_TEXT, TAGS
from app.web.openapi.parameters import TOKEN_PARAMETER, parameters, response_headers
from app.web.openapi.refs import ref
from app.web.openapi.schema_components import (
    EVENT_DESCRIPTIONS,
    STREAM_UNIONS,
    documented_schemas,
    event_component,
    exact_null,
    json_schema_components,
    regexp_pattern,
)
from app.web.openapi.security_schemes import security_requirements, security_schemes
from realtime.events import RETRY_MAX_MS, RETRY_MIN_MS
from schemas.envelope import EVENT_TYPES

logger = logging.getLogger(__name__)

STREAM_HEADERS = ("Cache-Control", "X-Accel-Buffering")


def build_spec(
    components: Sequence[str],
    routes: Iterable[tuple[str, str]] | None = None,
    *,
    insecure: bool = False,
) -> dict[str, Any]:
    """The OpenAPI document (a JSON-ready dict) of a process serving ``components``.

    ``routes``: the (METHOD, path template) pairs it serves (``routes_of(app)``); None
    documents every table entry of those components plus the process's own endpoints.
    """
    if routes is None:
        routes = _table_routes(components)
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=package_version(),
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": info_description(components, insecure),
            "license": {"name": "MIT"},
        },
        servers=[{"url": "/"}],
        tags=[{"name": name, "description": text} for name, text in TAGS.items()],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(regexp_pattern)  # type: ignore[no-untyped-call]  # apispec leaves it unannotated
    plugin.converter.add_attribute_function(exact_null)  # type: ignore[no-untyped-call]  # apispec leaves it unannotated
    schemas = documented_schemas(insecure)
    _add_components(spec, schemas, insecure)

    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        op = OPERATIONS.get((method, path))
        if op is None:
            logger.warning("route %s %s has no OpenAPI documentation", method, path)
            operation = _undocumented(method, path)
        else:
            operation = _operation(method, path, op, schemas, insecure)
        paths.setdefault(path, {})[method.lower()] = operation
    for path in sorted(paths):
        spec.path(path=path, operations=paths[path])
    return spec.to_dict()


def routes_of(app: web.Application) -> list[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves, sub-apps included, without
    HEAD/OPTIONS (aiohttp and CORS add them) and the console's static files."""
    found = []
    for route in app.router.routes():
        method = route.method.upper()
        resource = route.resource
        if method in ("HEAD", "OPTIONS") or resource is None or isinstance(resource, web.StaticResource):
            continue
        found.append((method, resource.canonical))
    return list(dict.fromkeys(found))


def spec_for_app(app: web.Application) -> dict[str, Any]:
    """The document of a (root) app: its sub-apps, its routes, its mode."""
    return build_spec(app[SETTINGS].components, routes_of(app), insecure=TOKENS not in app)


def _table_routes(components: Sequence[str]) -> list[tuple[str, str]]:
    """The table's routes that a process serving ``components`` would have: its sub-apps'
    and those of no sub-app."""
    served = tuple(f"/{c}/" for c in components)
    every_subapp = tuple(f"/{c}/" for c in COMPONENTS)
    return [key for key in OPERATIONS if key[1].startswith(served) or not key[1].startswith(every_subapp)]


def _add_components(spec: APISpec, schemas: Mapping[str, Schema], insecure: bool) -> None:
    """Schemas, parameters, headers, examples and security schemes, in the document's order."""
    event_types = {event_component(t): t for t in EVENT_TYPES}
    for name, schema in schemas.items():
        component: dict[str, Any] = {}
        if name in event_types:
            component["description"] = EVENT_DESCRIPTIONS[event_types[name]]
        spec.components.schema(name, component, schema=schema)
    for name, json_schema in json_schema_components().items():
        spec.components.schema(name, json_schema)

    for name, parameter in parameters(insecure).items():
        location = parameter.pop("in")
        spec.components.parameter(name, location, parameter)
    for name, header in response_headers().items():
        spec.components.header(name, header)
    for name, example in {**REQUEST_EXAMPLES, **RESPONSE_EXAMPLES}.items():
        if not (insecure and example.token_only):
            spec.components.example(name, {"summary": example.summary, "value": copy.deepcopy(example.value)})
    for name, error in ERROR_EXAMPLES.items():
        if not (insecure and error.token_only):
            spec.components.example(name, {"summary": f"{error.status} {error.code}", "value": error.body()})
    for name, (summary, event_id, event) in EVENT_EXAMPLES.items():
        description = f"On the wire: `id: {event_id}`" if event_id else "On the wire: no `id:` line"
        spec.components.example(
            name, {"summary": summary, "description": description, "value": copy.deepcopy(event)}
        )
    if not insecure:
        for name, scheme in security_schemes().items():
            spec.components.security_scheme(name, scheme)


def _operation(
    method: str, path: str, op: Operation, schemas: Mapping[str, Schema], insecure: bool
) -> dict[str, Any]:
    """The operation object of a documented route, as the answering process's mode has it."""
    # Parameter components by name (apispec turns the names into references).
    parameters: list[Any] = re.findall(r"{(\w+)}", path)
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    if op.stream is not None:
        parameters += ["Last-Event-ID", "last_event_id"]
        if not insecure:
            parameters.append(TOKEN_PARAMETER)
    parameters.append(REQUEST_ID_HEADER)
    operation: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "description": op.description,
        "operationId": _operation_id(method, path),
        "parameters": parameters,
        "responses": {},
    }
    if not insecure:
        operation["security"] = security_requirements(op.auth, query_token=op.stream is not None)
    if op.body is not None:
        operation["requestBody"] = _request_body(op, schemas[op.body], insecure)
    for answer in op.answers:
        operation["responses"][str(answer.status)] = _answer(answer, op, insecure)
    operation["responses"].update(_errors(op, insecure))
    return operation


def _request_body(op: Operation, schema: Schema, insecure: bool) -> dict[str, Any]:
    """Required when the schema (as this process loads it: partial or not) requires a field."""
    assert op.body is not None
    needs_body = any(
        f.required and not (schema.partial is True or f.name in (schema.partial or ()))
        for f in schema.fields.values()
    )
    return {
        "required": needs_body,
        "content": {
            "application/json": {
                "schema": ref("schemas", op.body),
                "examples": _examples(op.body_examples, REQUEST_EXAMPLES, insecure),
            }
        },
    }


def _examples(names: Iterable[str], source: Mapping[str, Example], insecure: bool) -> dict[str, Any]:
    """References to the named examples that the process's mode can produce."""
    return {name: ref("examples", name) for name in names if not (insecure and source[name].token_only)}


def _answer(answer: Answer, op: Operation, insecure: bool) -> dict[str, Any]:
    """A non-error answer; an event stream's shows its events as they travel."""
    headers = {REQUEST_ID_HEADER: ref("headers", REQUEST_ID_HEADER)}
    headers.update({name: ref("headers", name) for name in answer.headers})
    response: dict[str, Any] = {"description": answer.description, "headers": headers}
    if op.stream is not None:
        names = STREAM_EXAMPLES[op.stream]
        union = STREAM_UNIONS[op.stream]
        response["description"] = (
            f"{answer.description} Each event is an `id:` line (none on heartbeats, `typing` and `queue_update`) and a "
            f"`data:` line holding one envelope (the `{union}` schema), then a blank line; no "
            "`event:` line, so browsers read them with `onmessage` and switch on `data.type`. A "
            "stream the server ends (shutdown, a client too slow, a gap the history cannot "
            f"fill) gets a `retry: <{RETRY_MIN_MS}..{RETRY_MAX_MS}>` line first. On the wire:\n\n"
            f"```text\n{wire_text(names)}```"
        )
        headers.update({h: ref("headers", h) for h in STREAM_HEADERS})
        response["content"] = {
            "text/event-stream": {
                "schema": ref("schemas", union),
                "examples": {name: ref("examples", name) for name in dict.fromkeys(names)},
            }
        }
    elif answer.schema is not None:
        media: dict[str, Any] = {"schema": ref("schemas", answer.schema)}
        examples = _examples(answer.examples, RESPONSE_EXAMPLES, insecure)
        if examples:
            media["examples"] = examples
        response["content"] = {answer.media or "application/json": media}
    elif answer.media is not None:
        response["content"] = {answer.media: {"schema": {"type": "string"}, "example": answer.example}}
    return response


def _errors(op: Operation, insecure: bool) -> dict[str, dict[str, Any]]:
    """One answer per error status, listing its codes, with every example of that status."""
    by_status: dict[int, list[str]] = {}
    for name in op.errors:
        error = ERROR_EXAMPLES[name]
        if insecure and error.token_only:
            continue
        by_status.setdefault(error.status, []).append(name)
    responses = {}
    for status, names in sorted(by_status.items()):
        codes = ", ".join(f"`{c}`" for c in dict.fromkeys(ERROR_EXAMPLES[n].code for n in names))
        headers = {REQUEST_ID_HEADER: ref("headers", REQUEST_ID_HEADER)}
        if status in (429, 503):
            headers["Retry-After"] = ref("headers", "Retry-After")
        if status == 401:
            headers["WWW-Authenticate"] = ref("headers", "WWW-Authenticate")
        responses[str(status)] = {
            "description": f"{STATUS_TEXT[status]} Codes: {codes}.",
            "headers": headers,
            "content": {
                "application/json": {
                    "schema": ref("schemas", "Error"),
                    "examples": {name: ref("examples", name) for name in names},
                }
            },
        }
    return responses


def _operation_id(method: str, path: str) -> str:
    """A stable id from the route (``POST /chatbot/api/chat`` -> ``post_chatbot_chat``)."""
    words = [w.strip("{}") for w in path.strip("/").replace(".", "_").split("/") if w and w != "api"]
    return "_".join([method.lower(), *words]) if words else f"{method.lower()}_root"


def _undocumented(method: str, path: str) -> dict[str, Any]:
    """A route without a table entry: shown, and marked so that the test suite fails on it."""
    tag = path.strip("/").split("/", 1)[0]
    return {
        "tags": [tag if tag in TAGS else "process"],
        "summary": "Undocumented",
        "description": "This route has no entry in app/web/openapi/operations.py OPERATIONS yet.",
        "operationId": _operation_id(method, path),
        "parameters": re.findall(r"{(\w+)}", path),
        "responses": {"default": {"description": "Not documented."}},
        "x-undocumented": True,
    }
