"""--bot webhook: a bot service of your own, called over HTTP (docs/bots.md, "The webhook bot").

Each customer message while the bot holds the conversation is one ``POST`` to --bot-url::

    {"session": {"session_name", "status", "agent_id", "created_at"},
     "message": {"id", "role", "content", "agent_id", "created_at"},
     "transcript": [the messages before it, oldest first, at most --bot-context,
                    each {"id", "role", "content", "agent_id", "created_at"}]}

with ``Content-Type: application/json``, ``Accept: text/event-stream, application/json``,
``User-Agent: Switchboard`` and, when --bot-secret is set, ``Switchboard-Signature:
t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>`` (app.web.signing). The service answers 2xx
with either

- ``text/event-stream`` (read as it arrives, so the customer sees the answer being written):
  events per the SSE format (lines end with LF, CRLF or CR; ``data:`` lines joined with
  newlines; a blank line ends an event; ``:`` comments, ``id:`` and ``retry:`` ignored).
  An event without ``event:`` (or ``event: text`` / ``message``) carries a text piece, its
  data as raw text; ``event: handoff`` carries JSON ``{"reason": str|null, "summary":
  str|null}``; ``event: done`` (data optional) ends the answer; other event names are ignored (room to grow).
  A stream that closes before ``done`` was cut, even if it said something.
- any other type, read as JSON: ``{"text": str, "handoff": bool, "reason": str|null,
  "summary": str|null}`` (``text`` required, the rest optional; ``handoff`` false by default).

How it fails (BotFailure kinds): "connect" (refused, DNS, closed before answering),
"timeout" (connect or read timeout: no byte for read_timeout seconds), "rate_limited" (429),
"status" (other non-2xx, redirects not followed; detail: the status), "unreadable" (not the answer above, too long),
"cut" (the body broke off). The first-token and whole-answer timeouts and the breaker are
app.bots.guard's.
"""

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from app.domain.bot import BotFailure, Handoff, ReplyPart, Responder, Transcripts
from app.domain.store import Message, Session
from app.web.signing import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

# A JSON answer is read up to this many bytes; one event of a stream, and one line, up to
# MAX_EVENT: a bot cannot make this process hold an unbounded body.
MAX_ANSWER = 256 * 1024
MAX_EVENT = 64 * 1024
# Calls at once to the bot service (more wait for a connection: the breaker and the
# timeouts bound how long).
CONNECTIONS = 100
LINE_END = re.compile(rb"\r\n|\r|\n")
TEXT_EVENTS = ("", "text", "message")


def _message(message: Message) -> dict[str, Any]:
    return {
        "id": message["id"],
        "role": message["role"],
        "content": message["content"],
        "agent_id": message["agent_id"],
        "created_at": message["created_at"],
    }


class WebhookResponder(Responder):
    """Asks the bot service at ``url`` for each answer (the module's docstring is the
    contract). One HTTP client, made on first use (inside the event loop), kept for its
    connection pool; ``close()`` ends it."""

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
        if context_messages < 0:
            raise ValueError("context_messages must be >= 0")
        self._url = url
        self._secret = secret.encode() if secret else None
        self._transcripts = transcripts
        self._context = context_messages
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=CONNECTIONS)
            )
        return self._http

    async def _body(self, session: Session, message: Message) -> bytes:
        before: list[dict[str, Any]] = []
        if self._context:
            # One more than needed: the newest is normally ``message`` itself.
            recent = await self._transcripts(session["session_name"], self._context + 1)
            before = [_message(m) for m in recent if m["id"] != message["id"]][-self._context :]
        return orjson.dumps(
            {
                "session": {
                    "session_name": session["session_name"],
                    "status": session["status"],
                    "agent_id": session["agent_id"],
                    "created_at": session["created_at"],
                },
                "message": _message(message),
                "transcript": before,
            }
        )

    def _headers(self, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, application/json",
            "User-Agent": "Switchboard",
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign([self._secret], body, time.time())
        return headers

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        body = await self._body(session, message)
        answered = False  # the status line came: a broken connection now cuts the answer
        started = time.monotonic()
        try:
            # Not redirected: a redirect would resend the signed call elsewhere (or turn it
            # into a GET); a moved bot is a setting to change, and a 3xx a "status" failure.
            async with self._client().post(
                self._url, data=body, headers=self._headers(body), allow_redirects=False
            ) as response:
                answered = True
                logger.debug(
                    "bot service answered %d %s in %.3f s",
                    response.status,
                    response.content_type,
                    time.monotonic() - started,
                )
                if response.status == 429:
                    raise BotFailure("rate_limited", "429")
                if not 200 <= response.status < 300:
                    raise BotFailure("status", str(response.status))
                if response.content_type == "text/event-stream":
                    async for part in _events(response.content):
                        yield part
                else:
                    for part in _json_answer(await _read_all(response.content)):
                        yield part
        except BotFailure:
            raise
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors
            raise BotFailure("timeout", type(exc).__name__) from exc
        except aiohttp.ClientConnectorError as exc:
            raise BotFailure("connect", type(exc).__name__) from exc
        except aiohttp.ClientPayloadError as exc:
            raise BotFailure("cut", type(exc).__name__) from exc
        except aiohttp.ClientConnectionError as exc:
            raise BotFailure("cut" if answered else "connect", type(exc).__name__) from exc
        except aiohttp.ClientResponseError as exc:  # not HTTP, or a malformed status line
            raise BotFailure("unreadable", type(exc).__name__) from exc
        except aiohttp.ClientError as exc:  # an invalid URL and the like: settings, not the bot
            raise BotFailure("error", type(exc).__name__) from exc


async def _read_all(content: aiohttp.StreamReader) -> bytes:
    """The whole body, refused past MAX_ANSWER (``read(n)`` returns what has arrived so far,
    not n bytes: a body in several packets needs the loop)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > MAX_ANSWER:
            raise BotFailure("unreadable", "the answer is too long")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_answer(raw: bytes) -> list[ReplyPart]:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BotFailure("unreadable", "the answer is not JSON") from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
        raise BotFailure("unreadable", "the answer has no text")
    handoff = answer.get("handoff", False)
    if not isinstance(handoff, bool | None):
        raise BotFailure("unreadable", "handoff is not a boolean")
    parts: list[ReplyPart] = [answer["text"]] if answer["text"] else []
    if handoff:
        parts.append(_handoff(answer))
    return parts


def _handoff(fields: Any) -> Handoff:
    if not isinstance(fields, dict):
        raise BotFailure("unreadable", "a handoff is not an object")
    reason, summary = fields.get("reason"), fields.get("summary")
    if not isinstance(reason, str | None) or not isinstance(summary, str | None):
        raise BotFailure("unreadable", "a handoff's reason and summary are strings")
    return Handoff(reason, summary)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The stream's lines as they complete (any of its three line ends), until it ends."""
    buffer = b""
    after_cr = False  # a CR ended the last chunk: an LF starting the next belongs to it
    while chunk := await content.readany():
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        *lines, buffer = LINE_END.split(buffer + chunk)
        if len(buffer) > MAX_EVENT:
            raise BotFailure("unreadable", "a line is too long")
        for line in lines:
            yield line.decode("utf-8", "replace")


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[ReplyPart]:
    """The parts of a streamed answer, each as soon as its event is complete."""
    data: list[str]
    name, data, size = "", [], 0
    first = True
    async for line in _lines(content):
        if first:
            line, first = line.removeprefix("\ufeff"), False
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
                size += len(value) + 1
                if size > MAX_EVENT:
                    raise BotFailure("unreadable", "an event is too long")
            continue
        if name == "done":
            return
        text = "\n".join(data)
        if name == "handoff":
            try:
                yield _handoff(orjson.loads(text))
            except orjson.JSONDecodeError as exc:
                raise BotFailure("unreadable", "a handoff event is not JSON") from exc
        elif name in TEXT_EVENTS and text:
            yield text
        name, data, size = "", [], 0
    raise BotFailure("cut", "the stream ended before event: done")
