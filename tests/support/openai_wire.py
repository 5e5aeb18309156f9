"""A local server speaking the OpenAI Chat Completions streaming wire format, as the public API
reference describes it, for --bot openai tests (no model runs on these machines).

``POST /v1/chat/completions`` with ``stream: true`` answers ``text/event-stream``: ``data:``
lines of ``chat.completion.chunk`` objects (the first delta carries the role and an empty
content, then content deltas, tool-call deltas split into pieces by ``index``, a chunk with
the ``finish_reason``, and, with ``stream_options.include_usage``, a last chunk with no choices
and the ``usage``, every other chunk then having ``"usage": null``), then ``data: [DONE]``.
Without ``stream: true`` it answers 400 (only streaming is spoken here).

Tests script it over HTTP: ``POST /_script`` queues a JSON list of scenarios, consumed one per
completion request, first in first out (an empty queue echoes the last message's content);
``GET /_requests`` lists ``{"body", "authorization"}`` of every completion request received;
``POST /_reset`` empties both. A scenario is a JSON object, every key optional:

- ``"text": ["pie", "ces"]``: content deltas, ``"delay"`` seconds before each (0), after
  ``"first_delay"`` seconds of silence once the headers are sent (0);
- ``"handoff": {"reason": ..., "summary": ...}`` (or a string: arguments sent as they are):
  after the text, a call of ``"tool_name"`` (``handoff_to_human``) whose arguments come in
  ``"fragments"`` pieces (1); the finish reason is then ``tool_calls``;
- ``"finish"``: the finish reason instead (``"length"``...; ``null``: no finish chunk at all,
  the stream still ends properly with ``[DONE]``);
- ``"status": 429`` (or any): the API's error JSON ``{"error": {"message", "type", "code"}}``
  with that status, and ``Retry-After: 1`` on a 429;
- ``"cut": ["some", "pieces"]``: those deltas, then the connection closes mid-body (no finish
  reason, no ``[DONE]``, no end of the chunked body);
- ``"garbage": true``: a 200 event stream whose data is not JSON (``data: not-json``);
- ``"error_event": true``: after the text, an in-stream ``data: {"error": {...}}`` and the end.

Run: ``python -m tests.support.openai_wire --port N``.
"""

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.support import peer

SCRIPT = web.AppKey("script", list)
REQUESTS = web.AppKey("requests", list)
ERRORS = {
    429: ("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
}


def _event(body: Any) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


class Chunks:
    """The chunks of one answer, in the reference's shape."""

    def __init__(self, usage: bool) -> None:
        self.created = int(time.time())
        self.usage = usage

    def _body(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "chatcmpl-local",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": "local",
            "system_fingerprint": "fp_local",
            "choices": choices,
        }
        if self.usage:
            body["usage"] = None
        return body

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _event(self._body([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]))

    def usage_chunk(self) -> bytes:
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        return _event({**self._body([]), "usage": usage})


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    request.app[REQUESTS].append({"body": body, "authorization": request.headers.get("Authorization")})
    if body.get("stream") is not True:
        return _error(400, ("Only streaming is spoken here.", "invalid_request_error", None))
    script = request.app[SCRIPT]
    scenario: dict[str, Any] = script.pop(0) if script else {"text": [body["messages"][-1]["content"]]}
    if "status" in scenario:
        status = scenario["status"]
        return _error(status, ERRORS.get(status, (f"local error {status}", "server_error", None)))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    if scenario.get("garbage"):
        await response.write(b"data: not-json\n\n")
        return response
    chunks = Chunks(bool(body.get("stream_options", {}).get("include_usage")))
    await asyncio.sleep(scenario.get("first_delay", 0.0))
    await response.write(chunks.chunk({"role": "assistant", "content": ""}))
    for piece in scenario.get("cut", scenario.get("text", [])):
        await asyncio.sleep(scenario.get("delay", 0.0))
        await response.write(chunks.chunk({"content": piece}))
    if "cut" in scenario:
        assert request.transport is not None
        request.transport.close()
        return response
    if scenario.get("error_event"):
        await response.write(
            _event({"error": {"message": "overloaded", "type": "server_error", "code": None}})
        )
        return response
    finish = "stop"
    if "handoff" in scenario:
        await _tool_call(response, chunks, scenario)
        finish = "tool_calls"
    finish = scenario.get("finish", finish)
    if finish is not None:
        await response.write(chunks.chunk({}, finish))
    if chunks.usage:
        await response.write(chunks.usage_chunk())
    await response.write(b"data: [DONE]\n\n")
    return response


async def _tool_call(response: web.StreamResponse, chunks: Chunks, scenario: dict[str, Any]) -> None:
    """The call's id, type and name first, then its arguments in fragments (by index 0)."""
    handoff = scenario["handoff"]
    arguments = handoff if isinstance(handoff, str) else json.dumps(handoff)
    name = scenario.get("tool_name", "handoff_to_human")
    first = {"index": 0, "id": "call_local", "type": "function", "function": {"name": name, "arguments": ""}}
    await response.write(chunks.chunk({"tool_calls": [first]}))
    size = max(1, -(-len(arguments) // max(1, scenario.get("fragments", 1))))
    for start in range(0, len(arguments), size):
        piece = {"index": 0, "function": {"arguments": arguments[start : start + size]}}
        await response.write(chunks.chunk({"tool_calls": [piece]}))


def _error(status: int, error: tuple[str, str, str | None]) -> web.Response:
    message, kind, code = error
    headers = {"Retry-After": "1"} if status == 429 else {}
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


async def script(request: web.Request) -> web.Response:
    scenarios = await request.json()
    if not isinstance(scenarios, list) or not all(isinstance(s, dict) for s in scenarios):
        raise web.HTTPBadRequest(text="a JSON list of scenario objects")
    request.app[SCRIPT].extend(scenarios)
    return web.json_response({"queued": len(request.app[SCRIPT])})


async def reset(request: web.Request) -> web.Response:
    request.app[SCRIPT].clear()
    request.app[REQUESTS].clear()
    return web.json_response({})


async def requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[REQUESTS])


def main() -> None:
    args = peer.parser("A local OpenAI Chat Completions streaming endpoint for tests.").parse_args()
    app = web.Application()
    app[SCRIPT], app[REQUESTS] = [], []
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/_script", script)
    app.router.add_get("/_requests", requests)
    app.router.add_post("/_reset", reset)
    peer.serve(app, args.port)


if __name__ == "__main__":
    main()
