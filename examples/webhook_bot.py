"""A webhook bot for ``switchboard --bot webhook --bot-url http://127.0.0.1:8080/bot``.

Run it with ``python -m examples.webhook_bot --port 8080 --secret "$BOT_SECRET"`` and give the
server the same secret (``--bot-secret``). It checks each call's signature, answers a question,
and hands the conversation to a person (with a summary for the agent) when the customer asks
for one. A client that accepts ``text/event-stream`` gets the answer word by word. The
contract is docs/bots.md, "The webhook bot"; the signature check below is all a bot needs.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)
SECRET = web.AppKey("secret", bytes)
PACE = web.AppKey("pace", float)
TOLERANCE = 300  # seconds: older (or newer) signed calls are refused, replays with them
HUMAN = re.compile(r"\b(human|agent|person|someone)\b", re.IGNORECASE)


def signed(secret: bytes, body: bytes, header: str) -> bool:
    """``Switchboard-Signature: t=<unix>,v1=<hex>``: HMAC-SHA256 of ``<t>.`` + the body."""
    items = [item.partition("=") for item in header.split(",")]
    stamp = next((v for k, _, v in items if k == "t"), "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE:
        return False
    expected = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, _, v in items)


def answer(call: dict[str, Any]) -> dict[str, Any]:
    """The JSON answer: ``text``, and ``handoff`` with a ``reason`` and ``summary`` for the
    agent (built from what the customer wrote, so that nobody asks them again)."""
    text = call["message"]["content"]
    if HUMAN.search(text):
        asked = [m["content"] for m in call["transcript"] if m["role"] == "customer"]
        return {
            "text": "I'll bring in a colleague who can help. They will reply here.",
            "handoff": True,
            "reason": "the customer asked for a person",
            "summary": "Customer wrote: " + " / ".join([*asked[-3:], text])[:500],
        }
    return {"text": f"You asked: {text!r}. Here is what I know about that."}


async def bot(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    secret = request.app[SECRET]
    if secret and not signed(secret, body, request.headers.get("Switchboard-Signature", "")):
        return web.json_response({"error": "bad signature"}, status=401)
    try:
        reply = answer(json.loads(body))
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "not a Switchboard call"}, status=400)
    logger.info("answered a call (handoff: %s)", bool(reply.get("handoff")))  # never the words
    if "text/event-stream" not in request.headers.get("Accept", ""):
        return web.json_response(reply)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in re.findall(r"\S+\s*", reply["text"]):
        await asyncio.sleep(request.app[PACE])  # a model producing its next token
        await response.write(f"data: {word}\n\n".encode())
    if reply.get("handoff"):
        handoff = {"reason": reply["reason"], "summary": reply["summary"]}
        await response.write(f"event: handoff\ndata: {json.dumps(handoff)}\n\n".encode())
    await response.write(b"event: done\ndata: \n\n")
    return response


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--secret", default=os.environ.get("BOT_SECRET", ""))
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between streamed words")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app = web.Application()
    app[SECRET], app[PACE] = args.secret.encode(), args.pace
    app.router.add_post("/bot", bot)
    app.router.add_get("/health", health)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
