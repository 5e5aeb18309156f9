"""--bot webhook: a bot service of your own, called over HTTP (docs/bots.md, "The webhook bot").

Each customer message while the bot holds the conversation is a signed ``POST`` to --bot-url::

    {"session": {"session_name", "status", "agent_id", "created_at"},
     "message": {"id", "role", "content", "agent_id", "created_at"},
     "transcript": [the messages before it, oldest first, at most --bot-context]}

with ``Switchboard-Signature: t=<unix>,v1=<HMAC-SHA256 of "<t>." + body>`` (app.web.signing)
when --bot-secret is set, and ``Accept: text/event-stream, application/json``. The service
answers either

- ``application/json``: ``{"text": "...", "handoff": false, "reason": null, "summary": null}``
  (``text`` required; the rest optional), or
- ``text/event-stream``: events without a name carry a text piece each (multi-line data is
  joined with newlines); ``event: handoff`` carries ``{"reason", "summary"}``; ``event: done``
  ends the answer. A stream that closes before ``done`` was cut.

Anything else is a BotFailure: "connect", "timeout", "status" (non-2xx; 429 is "rate_limited"),
"unreadable", "cut".
"""

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from app.domain.bot import BotFailure, Handoff, ReplyPart, Responder, Transcripts
from app.domain.store import Message, Session
from app.web.signing import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

MESSAGE_FIELDS = ("id", "role", "content", "agent_id", "created_at")
SESSION_FIELDS = ("session_name", "status", "agent_id", "created_at")
# An answer's JSON body, or one event of a streamed answer, is at most this long.
MAX_ANSWER = 256 * 1024


class WebhookResponder(Responder):
    def __init__(
        self,
        *,
        url: str,
        secret: str | None,
        transcripts: Transcripts,
        context_messages: int = 20,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        self._url = url
        self._secret = secret.encode() if secret else None
        self._transcripts = transcripts
        self._context = context_messages
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _body(self, session: Session, message: Message) -> bytes:
        recent = await self._transcripts(session["session_name"], self._context + 1)
        before = [{k: m[k] for k in MESSAGE_FIELDS} for m in recent if m["id"] != message["id"]]  # type: ignore[literal-required]
        return orjson.dumps(
            {
                "session": {k: session[k] for k in SESSION_FIELDS},  # type: ignore[literal-required]
                "message": {k: message[k] for k in MESSAGE_FIELDS},  # type: ignore[literal-required]
                "transcript": before[-self._context :] if self._context else [],
            }
        )

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        body = await self._body(session, message)
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, application/json",
            "User-Agent": "Switchboard",
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign([self._secret], body, time.time())
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._http.post(self._url, data=body, headers=headers) as response:
                if response.status == 429:
                    raise BotFailure("rate_limited", "429")
                if not 200 <= response.status < 300:
                    raise BotFailure("status", str(response.status))
                if response.content_type == "text/event-stream":
                    async for part in _events(response.content):
                        yield part
                else:
                    for part in _json_answer(await response.content.read(MAX_ANSWER + 1)):
                        yield part
        except BotFailure:
            raise
        except TimeoutError as exc:
            raise BotFailure("timeout", "the bot service was too slow") from exc
        except aiohttp.ClientConnectorError as exc:
            raise BotFailure("connect", type(exc).__name__) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise BotFailure("cut", type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise BotFailure("connect", type(exc).__name__) from exc


def _json_answer(raw: bytes) -> list[ReplyPart]:
    if len(raw) > MAX_ANSWER:
        raise BotFailure("unreadable", "the answer is too long")
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BotFailure("unreadable", "the answer is not JSON") from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
        raise BotFailure("unreadable", "the answer has no text")
    parts: list[ReplyPart] = [answer["text"]] if answer["text"] else []
    if answer.get("handoff") is True:
        parts.append(_handoff(answer))
    elif answer.get("handoff") not in (None, False):
        raise BotFailure("unreadable", "handoff is not a boolean")
    return parts


def _handoff(fields: Any) -> Handoff:
    if not isinstance(fields, dict):
        raise BotFailure("unreadable", "a handoff is not an object")
    reason, summary = fields.get("reason"), fields.get("summary")
    if not isinstance(reason, str | None) or not isinstance(summary, str | None):
        raise BotFailure("unreadable", "a handoff's reason and summary are strings")
    return Handoff(reason, summary)


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[ReplyPart]:
    """The parts of a streamed answer, as each event completes (the SSE format's rules)."""
    name, data = "", []
    while True:
        try:
            line_bytes = await content.readuntil(b"\n")
        except ValueError as exc:  # a line past the reader's limit
            raise BotFailure("unreadable", "a line too long") from exc
        if not line_bytes.endswith(b"\n"):
            raise BotFailure("cut", "the stream ended before event: done")
        line = line_bytes.decode("utf-8", "replace").rstrip("\r\n")
        if line:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            continue
        if not data and not name:
            continue
        text = "\n".join(data)
        if name == "done":
            return
        if name == "handoff":
            try:
                yield _handoff(orjson.loads(text))
            except orjson.JSONDecodeError as exc:
                raise BotFailure("unreadable", "a handoff event is not JSON") from exc
        elif name in ("", "text") and text:
            yield text
        name, data = "", []
