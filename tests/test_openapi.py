"""GET /openapi.json: every route a process serves is documented, every example in the
document validates (through the schemas the server itself uses), the document is well-formed
OpenAPI, and real answers of a real flow match what the document says about their route and
status (which keeps the docs honest)."""

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.domain.auth import TokenAuthority
from app.factory import create_app
from app.process.settings import Settings
from app.web.openapi import (
    ERROR_EXAMPLES,
    EVENT_EXAMPLES,
    OPENAPI_DOCUMENT,
    OPENAPI_PATH,
    build_spec,
    documented_schemas,
    setup_openapi,
)
from schemas import responses as rs
from schemas.envelope import validate_event
from tests.support.api import CHATBOT, WORKBENCH
from tests.support.app_server import AppClient, ServeApp
from tests.support.sse import SSEEvent, SSEStream

COMPONENT_SETS = (("chatbot",), ("workbench",), ("chatbot", "workbench"))
# What the per-address limit (--start-rate) answers 429 for, with or without tokens.
ADDRESS_LIMITED = {
    f"{CHATBOT}/sessions",
    f"{CHATBOT}/chat",
    f"{CHATBOT}/chat/stream",
    f"{CHATBOT}/manual/escalate",
}
SECRET = "openapi-test-secret-0123456789-abcdefghij"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")

ClientFactory = Callable[[Settings], Awaitable[AppClient]]


# --- the app under test --------------------------------------------------------------------


def memory_settings(**changes: Any) -> Settings:
    return replace(Settings(port=0, use_redis=False, insecure=True), **changes)


def secure(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, insecure=False, secret=SECRET, **changes)


def serves_openapi(app: web.Application) -> bool:
    return any(
        route.method == "GET" and route.resource is not None and route.resource.canonical == OPENAPI_PATH
        for route in app.router.routes()
    )


@pytest.fixture
def openapi_client(serve_app: ServeApp) -> ClientFactory:
    """``await openapi_client(settings)``: the real app, with /openapi.json routed here if
    create_app does not route it (yet)."""

    async def make(settings: Settings) -> AppClient:
        app = create_app(settings)
        if not serves_openapi(app):
            setup_openapi(app)
        return await serve_app(app)

    return make


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """What the router serves, walked here (not with app.web.openapi's own walk): aiohttp's
    ``{name}`` templates are OpenAPI's; HEAD/OPTIONS and the console's static files aside."""
    routes = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "OPTIONS") or resource is None:
            continue
        if isinstance(resource, web.StaticResource):
            continue
        routes.add((route.method, re.sub(r"{(\w+)(:[^}]*)?}", r"{\1}", resource.canonical)))
    return routes


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def resolve(doc: dict[str, Any], obj: Any) -> Any:
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        obj = target
    return obj


def ref_name(obj: dict[str, Any]) -> str:
    ref: str = obj["$ref"]
    return ref.rsplit("/", 1)[1]


# --- a small JSON Schema check (the OpenAPI 3.0 subset the document uses) -------------------

JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Where ``value`` breaks the document's JSON schema (the marshmallow schemas are checked
    separately: this checks what apispec made of them)."""
    schema = resolve(doc, schema)
    if value is None and schema.get("nullable"):
        return []
    if "allOf" in schema:
        return [e for sub in schema["allOf"] for e in schema_errors(doc, sub, value, where)]
    if "anyOf" in schema or "oneOf" in schema:
        subs = schema.get("anyOf") or schema["oneOf"]
        matching = [sub for sub in subs if not schema_errors(doc, sub, value, where)]
        if "oneOf" in schema and len(matching) != 1:
            return [f"{where}: matches {len(matching)} of oneOf"]
        return [] if matching else [f"{where}: matches none of anyOf"]
    errors = []
    type_ = schema.get("type")
    if type_ is not None and not JSON_TYPES[type_](value):
        return [f"{where}: {value!r} is not {type_}"]
    if value is None and type_ is not None:
        return [f"{where}: null"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{where}: length {len(value)}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        errors.append(f"{where}: {value} out of range")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"{where}: missing {key}" for key in schema.get("required", ()) if key not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(doc, properties[key], item, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected key {key}")
            elif isinstance(extra, dict):
                errors += schema_errors(doc, extra, item, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(doc, schema["items"], item, f"{where}[{index}]")
    return errors


# --- checking an event and an answer against the document -----------------------------------


def event_errors(doc: dict[str, Any], union: str, event: dict[str, Any]) -> list[str]:
    """An event against the stream's documented union, its event schema, and the server's own
    check (schemas.envelope.validate_event)."""
    errors = schema_errors(doc, doc["components"]["schemas"][union], event)
    mapping = doc["components"]["schemas"][union]["discriminator"]["mapping"]
    if event.get("type") not in mapping:
        return [*errors, f"{event.get('type')} is not documented on a {union}"]
    name = mapping[event["type"]].rsplit("/", 1)[1]
    marshmallow_errors = documented_schemas()[name].validate(event)
    if marshmallow_errors:
        errors.append(f"{name}: {marshmallow_errors}")
    server_errors = validate_event(event)
    if server_errors:
        errors.append(f"validate_event: {server_errors}")
    return errors


class Contract:
    """What the document says of each route and status, checked against real answers."""

    def __init__(self, doc: dict[str, Any], insecure: bool) -> None:
        self.doc = doc
        self.schemas = documented_schemas(insecure)
        self.seen: set[tuple[str, str, int]] = set()

    def response(self, method: str, template: str, status: int) -> dict[str, Any]:
        operation = self.doc["paths"][template][method.lower()]
        documented = operation["responses"].get(str(status))
        assert documented is not None, (
            f"{method} {template} answered {status}, which is not documented "
            f"(documented: {sorted(operation['responses'])})"
        )
        self.seen.add((method, template, status))
        resolved: dict[str, Any] = resolve(self.doc, documented)
        return resolved

    async def check(
        self, response: aiohttp.ClientResponse, method: str, template: str, status: int | None = None
    ) -> Any:
        """The answer's JSON (None without a JSON body), once it matches its documentation."""
        text = await response.text() if response.content_type != "text/event-stream" else ""
        if status is not None:
            assert response.status == status, f"{method} {template}: {response.status} {text}"
        documented = self.response(method, template, response.status)
        for name, header in documented.get("headers", {}).items():
            header = resolve(self.doc, header)
            if header.get("required"):
                assert name in response.headers, f"{method} {template} {response.status}: no {name}"
        if "X-Request-ID" in response.headers:
            pattern = resolve(self.doc, documented["headers"]["X-Request-ID"])["schema"]["pattern"]
            assert re.search(pattern, response.headers["X-Request-ID"])
        content = documented.get("content")
        if not content:
            return None
        assert response.content_type in content, (response.content_type, list(content))
        if response.content_type != "application/json":
            return None
        body = json.loads(text)
        media = content["application/json"]
        name = ref_name(media["schema"])
        assert not schema_errors(self.doc, media["schema"], body), schema_errors(
            self.doc, media["schema"], body
        )
        if name in self.schemas:
            assert self.schemas[name].validate(body) == {}, (name, self.schemas[name].validate(body), body)
        if name == "Error":
            codes = {
                resolve(self.doc, example)["value"]["error"]["code"] for example in media["examples"].values()
            }
            assert body["error"]["code"] in codes, (
                f"{method} {template} {response.status}: code {body['error']['code']} is not "
                f"documented (documented: {sorted(codes)})"
            )
        return body

    async def call(
        self,
        client: AppClient,
        method: str,
        template: str,
        *,
        status: int,
        path: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """Send a request (JSON ``body``, or raw ``data``) and check its answer."""
        url = path if path is not None else template
        kwargs: dict[str, Any] = {"headers": headers, "params": params, "allow_redirects": False}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        async with client.request(method, url, **kwargs) as response:
            return await self.check(response, method, template, status)


async def fetch_doc(client: AppClient) -> dict[str, Any]:
    async with client.get(OPENAPI_PATH) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        result: dict[str, Any] = await response.json()
        return result


# --- the document describes exactly what the process serves ---------------------------------


@pytest.mark.parametrize("components", COMPONENT_SETS, ids="+".join)
@pytest.mark.parametrize("mode", ("insecure", "secure"))
async def test_every_route_is_documented(
    openapi_client: ClientFactory, components: tuple[str, ...], mode: str
) -> None:
    settings = memory_settings(components=components)
    if mode == "secure":  # with CORS too: its OPTIONS routes are not operations
        settings = secure(settings, cors_origins=("https://console.example",))
    client = await openapi_client(settings)
    doc = await fetch_doc(client)

    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "Switchboard" and doc["info"]["version"]
    assert doc["servers"] == [{"url": "/"}]
    documented = {(method, path) for method, path, _ in operations(doc)}
    assert documented == served_routes(client.app)
    for must in ("/health", "/health/ready", OPENAPI_PATH):
        assert ("GET", must) in documented
    for component in ("chatbot", "workbench"):
        mine = any(path.startswith(f"/{component}/") for _, path in documented)
        assert mine == (component in components)

    operation_ids = []
    for method, path, operation in operations(doc):
        where = f"{method} {path}"
        assert not operation.get("x-undocumented"), (
            f"{where} has no entry in app/web/openapi/operations.py OPERATIONS"
        )
        assert operation.get("description") and operation.get("summary"), where
        assert operation["tags"] and set(operation["tags"]) <= {t["name"] for t in doc["tags"]}, where
        assert operation["responses"], where
        assert any(code.startswith("2") or code == "302" for code in operation["responses"]), where
        for code, response in operation["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d", code), (where, code)
            assert resolve(doc, response)["description"], (where, code)
        operation_ids.append(operation["operationId"])
        if path.startswith(("/chatbot/", "/workbench/")):
            assert operation["tags"] == [path.split("/")[1]], where
    assert len(operation_ids) == len(set(operation_ids))

    schemes = doc["components"].get("securitySchemes", {})
    if mode == "secure":
        assert schemes["bearerAuth"]["scheme"] == "bearer"
        assert schemes["streamToken"] == {**schemes["streamToken"], "in": "query", "name": "token"}
    else:
        assert not schemes
        assert not any("security" in operation for _, _, operation in operations(doc))
        statuses = {code for _, _, operation in operations(doc) for code in operation["responses"]}
        assert not statuses & {"401", "403"}
        # 429 only where the per-address limit (--start-rate) holds, tokens or not.
        limited = {path for _, path, operation in operations(doc) if "429" in operation["responses"]}
        assert limited == ADDRESS_LIMITED & {path for _, path in documented}, limited


async def test_document_is_built_once_per_app(openapi_client: ClientFactory) -> None:
    client = await openapi_client(memory_settings())
    async with client.get(OPENAPI_PATH) as first, client.get(OPENAPI_PATH) as second:
        assert await first.read() == await second.read()
    holder = client.app.get(OPENAPI_DOCUMENT)
    assert holder is not None, (
        "route /openapi.json with app.web.openapi.setup_openapi(app): it keeps the document"
    )
    async with client.get(OPENAPI_PATH) as third:
        assert holder.body == await third.read()


def test_sse_endpoints_are_documented_as_event_streams() -> None:
    doc = build_spec(("chatbot", "workbench"))
    streams = {path: op for method, path, op in operations(doc) if path.endswith("/events")}
    assert set(streams) == {
        "/chatbot/api/sessions/{session_name}/events",
        "/workbench/api/sessions/{session_name}/events",
        "/workbench/api/agents/{agent_id}/events",
        "/workbench/api/events",
    }
    for path, operation in streams.items():
        ok = operation["responses"]["200"]
        media = ok["content"]["text/event-stream"]
        union = resolve(doc, media["schema"])
        assert union["discriminator"]["propertyName"] == "type"
        assert "id: " in ok["description"] and "data: {" in ok["description"]
        names = {p["name"] if "name" in p else ref_name(p) for p in operation["parameters"]}
        assert {"Last-Event-ID", "last_event_id", "token", "X-Request-ID"} <= names, path
        assert operation["security"] == [{"bearerAuth": []}, {"streamToken": []}]
        assert {"429", "503"} <= set(operation["responses"])
        # The wire example in the description: frames whose data lines are documented events.
        wire = ok["description"].split("```text\n", 1)[1].split("```", 1)[0]
        frames = [frame for frame in wire.split("\n\n") if frame]
        assert len(frames) >= 5
        for frame in frames:
            lines = dict(line.split(": ", 1) for line in frame.split("\n"))
            assert set(lines) <= {"id", "data"}
            event = json.loads(lines["data"])
            assert ("id" in lines) == (event["type"] not in ("heartbeat", "typing", "queue_update"))
            assert not event_errors(doc, ref_name(media["schema"]), event), event_errors(
                doc, ref_name(media["schema"]), event
            )


# --- every example validates ----------------------------------------------------------------


@pytest.mark.parametrize("insecure", (False, True), ids=("secure", "insecure"))
def test_every_example_validates(insecure: bool) -> None:
    doc = build_spec(("chatbot", "workbench"), insecure=insecure)
    schemas = documented_schemas(insecure)
    examples = doc["components"]["examples"]
    used: set[str] = set()

    for method, path, operation in operations(doc):
        body = operation.get("requestBody")
        if body is not None:
            media = body["content"]["application/json"]
            schema = schemas[ref_name(media["schema"])]
            assert media["examples"], f"{method} {path}: no request example"
            for name, example in media["examples"].items():
                used.add(ref_name(example))
                value = resolve(doc, example)["value"]
                schema.load(value)  # raises ValidationError when the example is wrong
                assert not schema_errors(doc, media["schema"], value), (
                    name,
                    schema_errors(doc, media["schema"], value),
                )
        for status, response in operation["responses"].items():
            for media_type, media in resolve(doc, response).get("content", {}).items():
                if media_type == "text/event-stream" and "examples" in media:
                    union = ref_name(media["schema"])
                    for name, example in media["examples"].items():
                        used.add(ref_name(example))
                        event = resolve(doc, example)["value"]
                        assert not event_errors(doc, union, event), (name, event_errors(doc, union, event))
                    continue
                if media_type != "application/json":
                    assert media.get("example"), f"{method} {path} {status}: no example"
                    continue
                name = ref_name(media["schema"])
                if name == "OpenApiDocument":
                    continue
                assert media.get("examples"), f"{method} {path} {status}: no example"
                for example_name, example in media["examples"].items():
                    used.add(ref_name(example))
                    value = resolve(doc, example)["value"]
                    assert schemas[name].validate(value) == {}, (example_name, schemas[name].validate(value))
                    assert not schema_errors(doc, media["schema"], value), example_name
                    if name == "Error":
                        assert rs.ErrorSchema().validate(value) == {}
                        assert str(ERROR_EXAMPLES[example_name].status) == status, (
                            method,
                            path,
                            example_name,
                        )
        for parameter in operation["parameters"]:
            parameter = resolve(doc, parameter)
            if "example" in parameter:
                assert not schema_errors(doc, parameter["schema"], parameter["example"]), parameter

    # Every example in components is shown by some operation, so every one was checked above;
    # the events too, including those no stream's example list shows.
    for name, (_, _, event) in EVENT_EXAMPLES.items():
        assert not event_errors(doc, "Event", event), (name, event_errors(doc, "Event", event))
        used.add(name)
    assert set(examples) == used, set(examples) ^ used


def test_error_examples_match_the_error_shape() -> None:
    for name, example in ERROR_EXAMPLES.items():
        body = example.body()
        assert rs.ErrorSchema().validate(body) == {}, name
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
        assert example.code in rs.ERROR_CODES


# --- the document is valid OpenAPI -----------------------------------------------------------


def walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from walk_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_refs(item)


@pytest.mark.parametrize("components", COMPONENT_SETS, ids="+".join)
@pytest.mark.parametrize("insecure", (False, True), ids=("secure", "insecure"))
def test_document_is_valid_openapi(components: tuple[str, ...], insecure: bool) -> None:
    doc = build_spec(components, insecure=insecure)
    json.dumps(doc)  # JSON all the way down

    for ref in walk_refs(doc):
        assert resolve(doc, {"$ref": ref}) is not None, ref
    for mapping in (
        s.get("discriminator", {}).get("mapping", {}) for s in doc["components"]["schemas"].values()
    ):
        for target in mapping.values():
            resolve(doc, {"$ref": target})
    for method, path, operation in operations(doc):
        in_template = set(re.findall(r"{(\w+)}", path))
        parameters = [resolve(doc, p) for p in operation.get("parameters", [])]
        declared = {p["name"] for p in parameters if p["in"] == "path"}
        assert declared == in_template, (method, path)
        assert all(p["required"] for p in parameters if p["in"] == "path")
        keys = [(p["in"], p["name"]) for p in parameters]
        assert len(keys) == len(set(keys)), (method, path)
        for requirement in operation.get("security", []):
            assert set(requirement) <= set(doc["components"].get("securitySchemes", {}))

    try:  # not a dependency: used when installed
        from openapi_spec_validator import validate
    except ImportError:
        return
    validate(doc)


# --- real answers match the document --------------------------------------------------------


async def open_events(
    contract: Contract,
    stack: AsyncExitStack,
    client: AppClient,
    template: str,
    path: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> SSEStream | None:
    response = await stack.enter_async_context(
        client.get(path, headers=headers, params=params, timeout=aiohttp.ClientTimeout(total=None))
    )
    await contract.check(response, "GET", template, status)
    return SSEStream(response) if status == 200 else None


def check_events(contract: Contract, union: str, events: list[SSEEvent]) -> None:
    for event in events:
        errors = event_errors(contract.doc, union, event.data)
        assert not errors, (event, errors)
        assert (event.id is None) == (event.type in ("heartbeat", "typing", "queue_update"))


SESSION_EVENTS = "/chatbot/api/sessions/{session_name}/events"
WB_SESSION_EVENTS = "/workbench/api/sessions/{session_name}/events"
AGENT_EVENTS = "/workbench/api/agents/{agent_id}/events"
SUPERVISOR_EVENTS = "/workbench/api/events"


async def test_a_real_flow_matches_the_document(openapi_client: ClientFactory, settings: Settings) -> None:
    client = await openapi_client(replace(settings, heartbeat=0.2))
    contract = Contract(await fetch_doc(client), insecure=True)
    c, w = contract.call, client

    async with AsyncExitStack() as stack:
        # The process's own endpoints.
        await c(w, "GET", "/health", status=200)
        async with w.get("/health/ready") as response:
            await contract.check(response, "GET", "/health/ready")
        if ("GET", "/metrics") in served_routes(client.app):
            await c(w, "GET", "/metrics", status=200)
        await c(w, "GET", "/", status=302)
        await c(w, "GET", OPENAPI_PATH, status=200)

        # A conversation, watched by the customer and by agent alice.
        await c(w, "POST", f"{CHATBOT}/sessions", status=201, body={"session_name": "demo"})
        generated = await c(w, "POST", f"{CHATBOT}/sessions", status=201)
        assert generated["session_name"].startswith("s-") and "token" not in generated
        customer = await open_events(contract, stack, w, SESSION_EVENTS, "/chatbot/api/sessions/demo/events")
        agent = await open_events(contract, stack, w, AGENT_EVENTS, "/workbench/api/agents/alice/events")
        watcher = await open_events(
            contract,
            stack,
            w,
            WB_SESSION_EVENTS,
            "/workbench/api/sessions/demo/events",
            headers={"Last-Event-ID": "1-0"},
        )
        board = await open_events(
            contract, stack, w, SUPERVISOR_EVENTS, "/workbench/api/events?status=waiting_agent"
        )
        assert customer and agent and watcher and board
        check_events(contract, "SupervisorStreamEvent", [await board.next()])
        check_events(contract, "SessionStreamEvent", [await customer.next()])
        check_events(contract, "AgentStreamEvent", [await agent.next()])
        check_events(contract, "SessionStreamEvent", [await watcher.next()])

        chat = f"{CHATBOT}/chat"
        reply = await c(w, "POST", chat, status=200, body={"session_name": "demo", "content": "Hello"})
        assert reply["reply"] is not None
        escalated = await c(
            w, "POST", chat, status=200, body={"session_name": "demo", "content": "I want a human"}
        )
        assert escalated["session"]["status"] == "waiting_agent"
        await c(w, "POST", f"{CHATBOT}/manual/escalate", status=200, body={"session_name": "demo"})
        queue = await c(w, "GET", f"{WORKBENCH}/sessions", status=200, params={"status": "waiting_agent"})
        assert [s["session_name"] for s in queue["sessions"]] == ["demo"] and queue["next_cursor"] is None
        await c(w, "GET", f"{WORKBENCH}/sessions", status=200)
        # Paged: a page of one, then the page after it (the generated session and this one).
        await c(w, "POST", f"{CHATBOT}/sessions", status=201, body={"session_name": "pager"})
        bots = await c(
            w, "GET", f"{WORKBENCH}/sessions", status=200, params={"status": "bot_active", "limit": "1"}
        )
        assert len(bots["sessions"]) == 1 and bots["next_cursor"] is not None
        rest = await c(
            w,
            "GET",
            f"{WORKBENCH}/sessions",
            status=200,
            params={"status": "bot_active", "limit": "1", "cursor": bots["next_cursor"]},
        )
        assert rest["sessions"][0]["session_name"] != bots["sessions"][0]["session_name"]

        action = WORKBENCH + "/sessions/{session_name}/"
        await c(
            w,
            "POST",
            action + "takeover",
            path=f"{WORKBENCH}/sessions/demo/takeover",
            status=200,
            body={"agent_id": "alice"},
        )
        await c(
            w,
            "POST",
            action + "takeover",
            path=f"{WORKBENCH}/sessions/demo/takeover",
            status=409,
            body={"agent_id": "bob"},
        )
        held = await c(
            w, "POST", chat, status=200, body={"session_name": "demo", "content": "My order is late"}
        )
        assert held["reply"] is None
        await c(
            w,
            "POST",
            action + "messages",
            path=f"{WORKBENCH}/sessions/demo/messages",
            status=200,
            body={"agent_id": "alice", "content": "Let me check that for you."},
        )
        await c(
            w,
            "POST",
            action + "messages",
            path=f"{WORKBENCH}/sessions/demo/messages",
            status=409,
            body={"agent_id": "bob", "content": "Me too"},
        )
        await c(w, "POST", f"{CHATBOT}/manual/escalate", status=409, body={"session_name": "demo"})
        health = await c(
            w,
            "GET",
            WORKBENCH + "/sessions/{session_name}/stream",
            path=f"{WORKBENCH}/sessions/demo/stream",
            status=200,
        )
        assert health["last_event"] is not None
        await c(
            w,
            "GET",
            WORKBENCH + "/sessions/{session_name}/stream",
            path=f"{WORKBENCH}/sessions/nobody/stream",
            status=404,
        )
        for sub in (CHATBOT, WORKBENCH):
            read = sub + "/sessions/{session_name}"
            await c(w, "GET", read, path=f"{sub}/sessions/demo", status=200)
            transcript = await c(
                w, "GET", read + "/messages", path=f"{sub}/sessions/demo/messages", status=200
            )
            assert len(transcript["messages"]) == 6 and transcript["next_cursor"] is None
            first = await c(
                w,
                "GET",
                read + "/messages",
                path=f"{sub}/sessions/demo/messages",
                status=200,
                params={"limit": "4"},
            )
            second = await c(
                w,
                "GET",
                read + "/messages",
                path=f"{sub}/sessions/demo/messages",
                status=200,
                params={"limit": "4", "cursor": first["next_cursor"]},
            )
            assert first["messages"] + second["messages"] == transcript["messages"]
            assert second["next_cursor"] is None
            for bad in ({"limit": "0"}, {"cursor": "NOPE"}, {"order": "asc"}, {"cursor": "0123456789abcdef"}):
                await c(
                    w, "GET", read + "/messages", path=f"{sub}/sessions/demo/messages", status=400, params=bad
                )
        await c(
            w,
            "POST",
            action + "release",
            path=f"{WORKBENCH}/sessions/demo/release",
            status=409,
            body={"agent_id": "bob"},
        )
        await c(
            w,
            "POST",
            action + "release",
            path=f"{WORKBENCH}/sessions/demo/release",
            status=200,
            body={"agent_id": "alice"},
        )
        await c(
            w,
            "POST",
            action + "release",
            path=f"{WORKBENCH}/sessions/demo/release",
            status=409,
            body={"agent_id": "alice"},
        )
        await c(
            w,
            "POST",
            action + "close",
            path=f"{WORKBENCH}/sessions/demo/close",
            status=200,
            body={"agent_id": "alice"},
        )
        await c(
            w,
            "POST",
            action + "close",
            path=f"{WORKBENCH}/sessions/demo/close",
            status=409,
            body={"agent_id": "alice"},
        )
        await c(w, "POST", chat, status=409, body={"session_name": "demo", "content": "Hello?"})
        await c(
            w,
            "POST",
            f"{CHATBOT}/chat/stream",
            status=409,
            body={"session_name": "demo", "content": "Hello?"},
        )

        # Everything the streams carried (heartbeats included) is documented.
        check_events(contract, "SessionStreamEvent", await customer.take(12))
        check_events(contract, "SessionStreamEvent", await watcher.take(12))
        agent_events = await agent.take(5)
        check_events(contract, "AgentStreamEvent", agent_events)
        assert [e.type for e in agent_events] == [
            "transfer_request",
            "status_change",
            "new_message",
            "status_change",
            "status_change",
        ]
        check_events(contract, "SessionStreamEvent", [await customer.next_of("heartbeat")])
        # The closed conversation rated, once; heard on its streams.
        rating = CHATBOT + "/sessions/{session_name}/rating"
        rate_demo = f"{CHATBOT}/sessions/demo/rating"
        await c(w, "POST", rating, path=rate_demo, status=200, body={"score": 5, "comment": "Thanks!"})
        check_events(contract, "SessionStreamEvent", [await customer.next_of("rating")])
        check_events(contract, "WorkbenchSessionStreamEvent", [await watcher.next_of("rating")])
        await c(w, "POST", rating, path=rate_demo, status=409, body={"score": 4})
        await c(w, "POST", rating, path=f"{CHATBOT}/sessions/pager/rating", status=409, body={"score": 4})
        await c(w, "POST", rating, path=rate_demo, status=400, body={"score": 4.5})
        await c(w, "POST", rating, path=f"{CHATBOT}/sessions/nobody/rating", status=404, body={"score": 4})
        await c(
            w,
            "POST",
            f"{CHATBOT}/chat/stream",
            status=200,
            body={"session_name": "streamed", "content": "Hello"},
        )

        queue_place = CHATBOT + "/sessions/{session_name}/queue"
        await c(w, "GET", queue_place, path=f"{CHATBOT}/sessions/demo/queue", status=200)
        await c(w, "GET", queue_place, path=f"{CHATBOT}/sessions/nobody/queue", status=404)

        # Agents (after the agent stream's events above: an agent_status goes to it too).
        agent_status = WORKBENCH + "/agents/{agent_id}/status"
        online = {"status": "online", "capacity": 4}
        await c(w, "POST", agent_status, path=f"{WORKBENCH}/agents/alice/status", status=200, body=online)
        await c(w, "GET", f"{WORKBENCH}/agents", status=200)
        # The supervisor stream hears the agents' presence too, whatever its filter.
        check_events(contract, "SupervisorStreamEvent", [await board.next_of("agent_status")])

        # Routing: a transfer to bob, then bob's back to the queue; offers (none in manual
        # assignment) and a transfer that names no place.
        routed = {"session_name": "routed"}
        await c(w, "POST", f"{CHATBOT}/sessions", status=201, body=routed)
        await c(w, "POST", f"{CHATBOT}/manual/escalate", status=200, body=routed)
        await c(w, "POST", agent_status, path=f"{WORKBENCH}/agents/bob/status", status=200, body=online)
        session_path = WORKBENCH + "/sessions/{session_name}/"
        routed_path = f"{WORKBENCH}/sessions/routed/"
        alice, bob = {"agent_id": "alice"}, {"agent_id": "bob"}
        await c(w, "POST", session_path + "takeover", path=routed_path + "takeover", status=200, body=alice)
        to_bob = {**alice, "to_agent_id": "bob", "note": "Wants a refund."}
        await c(w, "POST", session_path + "transfer", path=routed_path + "transfer", status=200, body=to_bob)
        agent_typing = session_path + "typing"
        await c(w, "POST", agent_typing, path=routed_path + "typing", status=200, body=bob)
        await c(w, "POST", agent_typing, path=routed_path + "typing", status=200, body=bob)  # dropped
        await c(w, "POST", agent_typing, path=routed_path + "typing", status=409, body=alice)
        note = session_path + "notes"
        await c(
            w, "POST", note, path=routed_path + "notes", status=200, body={**alice, "content": "a reseller"}
        )
        await c(w, "POST", note, path=routed_path + "notes", status=400, body=alice)
        await c(
            w,
            "POST",
            note,
            path=f"{WORKBENCH}/sessions/nobody/notes",
            status=404,
            body={**alice, "content": "x"},
        )
        # Read receipts: bob holds "routed"; its transcript has the customer's message.
        transcript = await c(
            w,
            "GET",
            WORKBENCH + "/sessions/{session_name}/messages",
            path=routed_path + "messages",
            status=200,
        )
        last = next(m["id"] for m in reversed(transcript["messages"]) if m["role"] != "note")
        read = session_path + "read"
        await c(w, "POST", read, path=routed_path + "read", status=200, body={**bob, "up_to": last})
        await c(w, "POST", read, path=routed_path + "read", status=409, body={**alice, "up_to": last})
        await c(w, "POST", read, path=routed_path + "read", status=400, body={**bob, "up_to": "0" * 16})
        customer_read = CHATBOT + "/sessions/{session_name}/read"
        await c(
            w, "POST", customer_read, path=f"{CHATBOT}/sessions/routed/read", status=200, body={"up_to": last}
        )
        await c(
            w, "POST", customer_read, path=f"{CHATBOT}/sessions/routed/read", status=400, body={"up_to": "x"}
        )
        await c(
            w, "POST", customer_read, path=f"{CHATBOT}/sessions/nobody/read", status=404, body={"up_to": last}
        )
        # A supervisor's actions: whisper to bob, barge in, hand it back to bob.
        sue = {"supervisor_id": "sue"}
        whisper = session_path + "whisper"
        await c(
            w, "POST", whisper, path=routed_path + "whisper", status=200, body={**sue, "content": "Refund."}
        )
        await c(w, "POST", whisper, path=routed_path + "whisper", status=400, body=sue)
        barge = session_path + "barge"
        await c(w, "POST", barge, path=routed_path + "barge", status=200, body=sue)
        await c(w, "POST", barge, path=routed_path + "barge", status=409, body=sue)
        reassign = session_path + "reassign"
        await c(w, "POST", reassign, path=routed_path + "reassign", status=400, body=sue)
        to_bob_again = {**sue, "to_agent_id": "bob"}
        await c(w, "POST", reassign, path=routed_path + "reassign", status=200, body=to_bob_again)
        customer_typing = CHATBOT + "/sessions/{session_name}/typing"
        await c(w, "POST", customer_typing, path=f"{CHATBOT}/sessions/routed/typing", status=200)
        await c(w, "POST", customer_typing, path=f"{CHATBOT}/sessions/demo/typing", status=409)
        await c(w, "POST", customer_typing, path=f"{CHATBOT}/sessions/nobody/typing", status=404)
        await c(w, "POST", session_path + "transfer", path=routed_path + "transfer", status=409, body=to_bob)
        to_queue = {**bob, "to_queue": True}
        await c(
            w, "POST", session_path + "transfer", path=routed_path + "transfer", status=200, body=to_queue
        )
        await c(w, "POST", session_path + "transfer", path=routed_path + "transfer", status=400, body=alice)
        await c(w, "POST", session_path + "accept", path=routed_path + "accept", status=409, body=alice)
        await c(w, "POST", session_path + "decline", path=routed_path + "decline", status=409, body=alice)
        await c(
            w,
            "POST",
            session_path + "accept",
            path=f"{WORKBENCH}/sessions/nobody/accept",
            status=404,
            body=alice,
        )

        # Errors.
        await c(
            w,
            "POST",
            agent_status,
            path=f"{WORKBENCH}/agents/alice/status",
            status=400,
            body={"status": "busy"},
        )
        await c(w, "POST", f"{CHATBOT}/sessions", status=409, body={"session_name": "demo"})
        await c(w, "POST", f"{CHATBOT}/sessions", status=400, body={"session_name": "no spaces"})
        await c(w, "GET", CHATBOT + "/sessions/{session_name}", path=f"{CHATBOT}/sessions/nobody", status=404)
        await c(
            w, "GET", CHATBOT + "/sessions/{session_name}", path=f"{CHATBOT}/sessions/bad!name", status=400
        )
        await c(
            w,
            "GET",
            WORKBENCH + "/sessions/{session_name}/messages",
            path=f"{WORKBENCH}/sessions/nobody/messages",
            status=404,
        )
        await open_events(
            contract, stack, w, SESSION_EVENTS, "/chatbot/api/sessions/nobody/events", status=404
        )
        await open_events(
            contract, stack, w, WB_SESSION_EVENTS, "/workbench/api/sessions/bad!x/events", status=400
        )
        await open_events(contract, stack, w, AGENT_EVENTS, "/workbench/api/agents/bad!x/events", status=400)
        await open_events(
            contract, stack, w, SUPERVISOR_EVENTS, "/workbench/api/events?sessions=bad!x", status=400
        )
        await c(w, "POST", chat, status=400, data=b"{not json", headers={"Content-Type": "application/json"})
        await c(w, "POST", chat, status=415, data=b"hello", headers={"Content-Type": "text/plain"})
        await c(w, "POST", chat, status=413, data=b"x" * 70_000, headers={"Content-Type": "application/json"})
        await c(w, "POST", chat, status=400, body={"session_name": "demo", "content": ""})
        await c(w, "POST", chat, status=400, body={"session_name": "demo"})
        await c(
            w,
            "POST",
            f"{CHATBOT}/manual/escalate",
            status=400,
            body={"session_name": "demo", "reason": "x" * 501},
        )
        await c(w, "POST", f"{CHATBOT}/manual/escalate", status=404, body={"session_name": "nobody"})
        await c(
            w, "POST", action + "takeover", path=f"{WORKBENCH}/sessions/demo/takeover", status=400, body={}
        )
        await c(
            w,
            "POST",
            action + "takeover",
            path=f"{WORKBENCH}/sessions/nobody/takeover",
            status=404,
            body={"agent_id": "alice"},
        )
        await c(
            w,
            "POST",
            action + "close",
            path=f"{WORKBENCH}/sessions/bad!x/close",
            status=400,
            body={"agent_id": "alice"},
        )
        await c(
            w,
            "POST",
            action + "messages",
            path=f"{WORKBENCH}/sessions/demo/messages",
            status=400,
            body={"agent_id": "alice", "content": "x" * 4001},
        )
        await c(w, "GET", f"{WORKBENCH}/sessions", status=400, params={"status": "lost"})
        for bad in ({"order": "asc"}, {"limit": "1001"}, {"cursor": "x"}, {"cursor": "0123456789abcdef"}):
            await c(w, "GET", f"{WORKBENCH}/sessions", status=400, params=bad)

    # The flow went through every documented operation.
    exercised = {(method, template) for method, template, _ in contract.seen}
    assert exercised == {(method, path) for method, path, _ in operations(contract.doc)}


async def test_a_real_secure_flow_matches_the_document(
    openapi_client: ClientFactory, settings: Settings
) -> None:
    client = await openapi_client(secure(settings))
    contract = Contract(await fetch_doc(client), insecure=False)
    c, w = contract.call, client
    alice = TokenAuthority(SECRET).mint("agent", "alice", 3600)
    as_alice = {"Authorization": f"Bearer {alice}"}
    action = WORKBENCH + "/sessions/{session_name}/"

    async with AsyncExitStack() as stack:
        created = await c(w, "POST", f"{CHATBOT}/sessions", status=201, body={"session_name": "demo"})
        as_demo = {"Authorization": f"Bearer {created['token']}"}
        other = await c(w, "POST", f"{CHATBOT}/sessions", status=201, body={"session_name": "other"})
        as_other = {"Authorization": f"Bearer {other['token']}"}

        chat = f"{CHATBOT}/chat"
        # A conversation starts only through POST /sessions: a chat needs its token.
        await c(w, "POST", chat, status=401, body={"session_name": "fresh", "content": "Hello"})
        await c(w, "POST", chat, status=401, body={"session_name": "demo", "content": "Hello"})
        await c(
            w,
            "POST",
            chat,
            status=401,
            body={"session_name": "demo", "content": "Hello"},
            headers={"Authorization": "Bearer not-a-token"},
        )
        await c(
            w, "POST", chat, status=403, body={"session_name": "demo", "content": "Hello"}, headers=as_other
        )
        await c(
            w,
            "POST",
            chat,
            status=200,
            body={"session_name": "demo", "content": "I want a human"},
            headers=as_demo,
        )
        await c(
            w,
            "GET",
            CHATBOT + "/sessions/{session_name}",
            path=f"{CHATBOT}/sessions/demo",
            status=403,
            headers=as_other,
        )
        await c(w, "GET", CHATBOT + "/sessions/{session_name}", path=f"{CHATBOT}/sessions/demo", status=401)

        stream = await open_events(
            contract,
            stack,
            w,
            SESSION_EVENTS,
            "/chatbot/api/sessions/demo/events",
            params={"token": created["token"]},
        )
        assert stream is not None
        check_events(contract, "SessionStreamEvent", [await stream.next()])
        await open_events(contract, stack, w, SESSION_EVENTS, "/chatbot/api/sessions/demo/events", status=401)

        await c(w, "GET", f"{WORKBENCH}/sessions", status=401)
        await c(w, "GET", f"{WORKBENCH}/sessions", status=403, headers=as_demo)
        await c(w, "GET", f"{WORKBENCH}/sessions", status=200, headers=as_alice)
        await c(
            w,
            "POST",
            action + "takeover",
            path=f"{WORKBENCH}/sessions/demo/takeover",
            status=403,
            headers=as_alice,
            body={"agent_id": "bob"},
        )
        await c(
            w,
            "POST",
            action + "takeover",
            path=f"{WORKBENCH}/sessions/demo/takeover",
            status=200,
            headers=as_alice,
        )
        await c(
            w,
            "POST",
            action + "messages",
            path=f"{WORKBENCH}/sessions/demo/messages",
            status=200,
            headers=as_alice,
            body={"content": "Hello, I am Alice."},
        )
        await open_events(
            contract, stack, w, AGENT_EVENTS, "/workbench/api/agents/bob/events", status=403, headers=as_alice
        )
        agent = await open_events(
            contract, stack, w, AGENT_EVENTS, "/workbench/api/agents/alice/events", params={"token": alice}
        )
        assert agent is not None
        check_events(contract, "AgentStreamEvent", [await agent.next()])


async def test_limits_answer_as_documented(openapi_client: ClientFactory) -> None:
    settings = secure(
        memory_settings(),
        rate_limit=0.001,
        rate_burst=1,
        max_streams=2,
        max_streams_per_token=1,
        start_rate=2,
    )
    client = await openapi_client(settings)
    contract = Contract(await fetch_doc(client), insecure=False)
    authority = TokenAuthority(SECRET)
    as_agent = {
        name: {"Authorization": f"Bearer {authority.mint('agent', name, 3600)}"}
        for name in ("alice", "bob", "carol")
    }

    async with AsyncExitStack() as stack:
        created = await contract.call(client, "POST", f"{CHATBOT}/sessions", status=201)
        token = {"Authorization": f"Bearer {created['token']}"}
        body = {"session_name": created["session_name"]}
        await contract.call(
            client, "POST", f"{CHATBOT}/manual/escalate", status=200, body=body, headers=token
        )
        await contract.call(
            client, "POST", f"{CHATBOT}/manual/escalate", status=429, body=body, headers=token
        )
        # The start and the escalation took this address's two: a third start is refused.
        await contract.call(client, "POST", f"{CHATBOT}/sessions", status=429)

        path = "/workbench/api/agents/{}/events"
        await open_events(
            contract, stack, client, AGENT_EVENTS, path.format("alice"), headers=as_agent["alice"]
        )
        await open_events(
            contract, stack, client, AGENT_EVENTS, path.format("alice"), status=429, headers=as_agent["alice"]
        )
        await open_events(contract, stack, client, AGENT_EVENTS, path.format("bob"), headers=as_agent["bob"])
        await open_events(
            contract, stack, client, AGENT_EVENTS, path.format("carol"), status=503, headers=as_agent["carol"]
        )


async def test_address_limit_answers_as_documented_without_tokens(openapi_client: ClientFactory) -> None:
    """Under --insecure too, a start or an escalation past --start-rate is the documented 429."""
    client = await openapi_client(memory_settings(start_rate=2))
    contract = Contract(await fetch_doc(client), insecure=True)
    await contract.call(client, "POST", f"{CHATBOT}/sessions", status=201, body={"session_name": "demo"})
    chat = {"session_name": "other", "content": "hello"}
    await contract.call(client, "POST", f"{CHATBOT}/chat", status=200, body=chat)  # starts "other"
    await contract.call(client, "POST", f"{CHATBOT}/sessions", status=429)
    await contract.call(client, "POST", f"{CHATBOT}/chat", status=429, body={**chat, "session_name": "new"})
    await contract.call(client, "POST", f"{CHATBOT}/chat", status=200, body=chat)  # not a start
    await contract.call(
        client, "POST", f"{CHATBOT}/manual/escalate", status=429, body={"session_name": "demo"}
    )
