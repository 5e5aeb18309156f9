"""A local server speaking the OpenAI Chat Completions streaming wire format, as the public API
reference describes it, for --bot openai tests (no model runs on these machines).

``POST /v1/chat/completions`` with ``stream: true`` answers ``text/event-stream``: ``data:``
lines of ``chat.completion.chunk`` objects (the first delta carries the role, then content
deltas, tool-call deltas split into pieces by ``index``, a last chunk with ``finish_reason``,
and, with ``stream_options.include_usage``, a chunk with no choices and the ``usage``), then
``data: [DONE]``. Tests script it over HTTP: ``POST /_script`` queues scenarios, one per
completion request (an empty queue echoes the last user message), ``GET /_requests`` lists
the bodies and Authorization headers received, and ``POST /_reset`` empties both. A scenario is a JSON object:

- ``{"text": ["pie", "ces"], "delay": 0.0, "first_delay": 0.0}``: content deltas;
- ``{"text": [...], "handoff": {"reason", "summary"}, "fragments": 3}``: then a tool call whose
  arguments come in that many pieces (finish_reason ``tool_calls``);
- ``{"status": 429}`` or ``{"status": 500}``: the API's error JSON (429 with Retry-After);
- ``{"cut": ["some", "pieces"]}``: those deltas, then the connection closes, unfinished;
- ``{"garbage": true}``: a 200 event stream whose data is not JSON.

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


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-local",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "local",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _usage() -> bytes:
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    body = {
        "id": "chatcmpl-local",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "local",
        "choices": [],
        "usage": usage,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    request.app[REQUESTS].append({"body": body, "authorization": request.headers.get("Authorization")})
    script = request.app[SCRIPT]
    scenario: dict[str, Any] = script.pop(0) if script else {"text": [body["messages"][-1]["content"]]}
    if "status" in scenario:
        status = scenario["status"]
        error = {"error": {"message": f"local error {status}", "type": "server_error", "code": None}}
        headers = {"Retry-After": "1"} if status == 429 else {}
        return web.json_response(error, status=status, headers=headers)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if scenario.get("garbage"):
        await response.write(b"data: not-json\n\n")
        return response
    await asyncio.sleep(scenario.get("first_delay", 0.0))
    await response.write(_chunk({"role": "assistant", "content": ""}))
    for piece in scenario.get("cut", scenario.get("text", [])):
        await asyncio.sleep(scenario.get("delay", 0.0))
        await response.write(_chunk({"content": piece}))
    if "cut" in scenario:
        assert request.transport is not None
        request.transport.close()
        return response
    finish = "stop"
    handoff = scenario.get("handoff")
    if handoff is not None:
        arguments = json.dumps(handoff)
        count = max(1, scenario.get("fragments", 1))
        size = -(-len(arguments) // count)
        first = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "handoff_to_human", "arguments": ""},
        }
        await response.write(_chunk({"tool_calls": [first]}))
        for start in range(0, len(arguments), size):
            piece = {"index": 0, "function": {"arguments": arguments[start : start + size]}}
            await response.write(_chunk({"tool_calls": [piece]}))
        finish = "tool_calls"
    await response.write(_chunk({}, finish))
    if body.get("stream_options", {}).get("include_usage"):
        await response.write(_usage())
    await response.write(b"data: [DONE]\n\n")
    return response


async def script(request: web.Request) -> web.Response:
    request.app[SCRIPT].extend(await request.json())
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
