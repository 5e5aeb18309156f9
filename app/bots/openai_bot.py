"""--bot openai: any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI, vLLM,
Ollama, LiteLLM) through the official ``openai`` SDK, streamed (docs/bots.md).

The conversation so far is the context: the newest --bot-context messages within a rough
token budget (characters / 4; the system prompt is sent whole, outside it), customer as
``user``, bot as ``assistant``, and an agent's words as a ``system`` note (so that the model
does not take them for its own). The model hands off by calling the tool
``handoff_to_human(reason, summary)``; its arguments arrive in pieces and are read once the
stream ends. The SDK retries nothing (``max_retries=0``) and only bounds the connect and the
silence between bytes: the first-token and whole-answer timeouts, the breaker and the metrics
are app.bots.guard's. Every failure is a ``BotFailure`` whose detail never holds a message's
words or the key.
"""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai.types.chat.chat_completion_chunk import (
    ChatCompletionChunk,
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
)

from app.domain.bot import BotFailure, Handoff, ReplyPart, Responder, Transcripts, Usage
from app.domain.store import Message, Session

logger = logging.getLogger(__name__)

HANDOFF_NAME = "handoff_to_human"
HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": HANDOFF_NAME,
        "description": "Hand the conversation to a human agent, who continues it in this chat.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "Why a person is needed."},
                "summary": {
                    "type": "string",
                    "description": "For the agent: what the customer wants and what was already "
                    "tried, so that nobody asks the customer again.",
                },
            },
            "required": ["reason", "summary"],
        },
    },
}
# The reason of a hand-off whose arguments cannot be read: the model did ask for a person.
UNREAD_REASON = "the assistant asked for a person"
# An escalation reason is at most this long (schemas.fields.MAX_REASON); a model's is cut to it.
MAX_REASON = 500
CHARS_PER_TOKEN = 4
AGENT_NOTE = "A human agent wrote to the customer: "


class OpenAIResponder(Responder):
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        system_prompt: str,
        transcripts: Transcripts,
        context_messages: int = 20,
        context_tokens: int = 3000,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        if context_messages < 0 or context_tokens < 1:
            raise ValueError("context_messages must be >= 0 and context_tokens >= 1")
        self._options: dict[str, Any] = {
            "base_url": base_url,
            # Local servers (vLLM, Ollama) take any key; the SDK refuses to run without one.
            "api_key": api_key or "unused",
            "max_retries": 0,
            # read: the longest silence between two bytes (write and pool share it).
            "timeout": openai.Timeout(read_timeout, connect=connect_timeout),
        }
        self._client: openai.AsyncOpenAI | None = openai.AsyncOpenAI(**self._options)
        self._model = model
        self._prompt = system_prompt
        self._transcripts = transcripts
        self._context = context_messages
        self._budget = context_tokens * CHARS_PER_TOKEN

    async def close(self) -> None:
        """Close the SDK's connections (a later answer opens a new client)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def messages(self, session: Session, message: Message) -> list[dict[str, str]]:
        """The request's messages: the prompt, the newest earlier messages that fit the budget
        with the new one, then the new one (always, its start kept if it alone is past it)."""
        recent = await self._transcripts(session["session_name"], self._context + 1)
        earlier = [m for m in recent if m["id"] != message["id"]][-self._context :] if self._context else []
        newest = {"role": "user", "content": message["content"][: self._budget]}
        room = self._budget - len(newest["content"])
        kept: list[dict[str, str]] = []
        for old in reversed(earlier):
            mapped = _mapped(old)
            if len(mapped["content"]) > room:
                break  # the oldest go first: nothing older than a message that does not fit
            room -= len(mapped["content"])
            kept.append(mapped)
        return [{"role": "system", "content": self._prompt}, *reversed(kept), newest]

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        request: dict[str, Any] = {
            "model": self._model,
            "messages": await self.messages(session, message),
            "stream": True,
            "tools": [HANDOFF_TOOL],
            "stream_options": {"include_usage": True},
        }
        if self._client is None:
            self._client = openai.AsyncOpenAI(**self._options)
        try:
            chunks = await self._client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise _failure(exc, answered=False) from exc
        answer = _Answer()
        try:
            async with chunks:
                async for chunk in chunks:
                    for part in answer.take(chunk):
                        yield part
        except (openai.APIError, ValueError) as exc:  # ValueError: JSON, UTF-8, pydantic
            raise _failure(exc, answered=True) from exc
        if answer.finish is None:
            if answer.chunks == 0 and not _is_event_stream(chunks.response.headers.get("content-type")):
                raise BotFailure("unreadable", "not an event stream")
            raise BotFailure("cut", "the stream ended without a finish reason")
        if answer.finish in ("length", "content_filter"):
            logger.debug("the model's answer ended early: %s", answer.finish)
        handoff = answer.handoff()
        if handoff is not None:
            yield handoff


def _mapped(message: Message) -> dict[str, str]:
    if message["role"] == "customer":
        return {"role": "user", "content": message["content"]}
    if message["role"] == "bot":
        return {"role": "assistant", "content": message["content"]}
    return {"role": "system", "content": AGENT_NOTE + message["content"]}


def _failure(exc: Exception, *, answered: bool) -> BotFailure:
    """The kind of an SDK failure; ``answered``: the response had begun (its headers came)."""
    cause = type(exc.__cause__ or exc).__name__  # the SDK's own errors wrap httpx2's
    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: a subclass of it
        return BotFailure("timeout", cause)
    if isinstance(exc, openai.APIConnectionError):
        return BotFailure("cut" if answered else "connect", cause)
    if isinstance(exc, openai.RateLimitError):
        return BotFailure("rate_limited", "429")
    if isinstance(exc, openai.APIStatusError):
        return BotFailure("status", str(exc.status_code))
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return BotFailure("unreadable", type(exc).__name__)
    if isinstance(exc, openai.APIError):
        # An error event in the stream ({"error": {...}}): the answer stopped before its end.
        return BotFailure("cut", f"an error event {str(exc.code or exc.type)[:64]!r}")
    return BotFailure("error", type(exc).__name__)


def _is_event_stream(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "text/event-stream"


class _Answer:
    """What the chunks said so far: the finish reason, the tool calls by index. The SDK checks
    no chunk's shape, so whatever this reads is checked here (else ``unreadable``)."""

    def __init__(self) -> None:
        self.chunks = 0
        self.finish: str | None = None
        self.calls: dict[int | str, list[str]] = {}  # index: [name, arguments]

    def take(self, chunk: object) -> list[ReplyPart]:
        """The parts of one chunk: its text, and a Usage if it has one."""
        self.chunks += 1
        if not isinstance(chunk, ChatCompletionChunk):
            raise BotFailure("unreadable", "a chunk that is not an object")
        parts: list[ReplyPart] = []
        choices = getattr(chunk, "choices", None) or []
        if not isinstance(choices, list):
            raise BotFailure("unreadable", "choices is not a list")
        for choice in choices:
            if not isinstance(choice, Choice):
                raise BotFailure("unreadable", "a choice is not an object")
            delta = getattr(choice, "delta", None)
            if delta is not None:
                parts.extend(self._delta(delta))
            finish = getattr(choice, "finish_reason", None)
            if finish is not None:
                if not isinstance(finish, str):
                    raise BotFailure("unreadable", "finish_reason is not a string")
                self.finish = finish
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            parts.append(Usage(_count(usage, "prompt_tokens"), _count(usage, "completion_tokens")))
        return parts

    def _delta(self, delta: object) -> list[ReplyPart]:
        if not isinstance(delta, ChoiceDelta):
            raise BotFailure("unreadable", "a delta is not an object")
        content = getattr(delta, "content", None)
        if content is not None and not isinstance(content, str):
            raise BotFailure("unreadable", "content is not a string")
        calls = getattr(delta, "tool_calls", None) or []
        if not isinstance(calls, list):
            raise BotFailure("unreadable", "tool_calls is not a list")
        for call in calls:
            self._gather(call)
        return [content] if content else []

    def _gather(self, call: object) -> None:
        """A piece of a tool call: the first piece of an index has its id and name, the
        arguments' JSON follows in fragments."""
        if not isinstance(call, ChoiceDeltaToolCall):
            raise BotFailure("unreadable", "a tool call is not an object")
        index, call_id = getattr(call, "index", None), getattr(call, "id", None)
        if isinstance(index, int):
            key: int | str = index
        elif isinstance(call_id, str):  # servers that leave the index out send whole calls
            key = call_id
        else:
            raise BotFailure("unreadable", "a tool call without an index")
        function = getattr(call, "function", None)
        if function is None:
            self.calls.setdefault(key, ["", ""])
            return
        name, arguments = getattr(function, "name", None), getattr(function, "arguments", None)
        if not isinstance(function, ChoiceDeltaToolCallFunction) or not all(
            isinstance(value, str | None) for value in (name, arguments)
        ):
            raise BotFailure("unreadable", "a tool call's function is not name and arguments")
        gathered = self.calls.setdefault(key, ["", ""])
        if name and gathered[0] != name:  # some servers repeat the name in every piece
            gathered[0] += name
        gathered[1] += arguments or ""

    def handoff(self) -> Handoff | None:
        """The hand-off the model asked for (its first call of handoff_to_human), if any."""
        found: Handoff | None = None
        for name, arguments in self.calls.values():
            if name == HANDOFF_NAME and found is None:
                found = _handoff(arguments)
            else:
                logger.debug("ignored a call of the tool %r", name[:64])
        return found


def _count(usage: object, field: str) -> int:
    """A token count (only counted, never trusted: anything but an int is 0)."""
    value = getattr(usage, field, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _handoff(arguments: str) -> Handoff:
    """The model asked for a person: that happens even if its arguments cannot be read (then
    with UNREAD_REASON and no summary; a missing or empty reason is UNREAD_REASON too)."""
    try:
        fields = json.loads(arguments or "{}")
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        logger.warning("%s called with arguments that are not a JSON object", HANDOFF_NAME)
        return Handoff(UNREAD_REASON, None)
    reason, summary = fields.get("reason"), fields.get("summary")
    return Handoff(
        reason[:MAX_REASON] if isinstance(reason, str) and reason.strip() else UNREAD_REASON,
        summary if isinstance(summary, str) and summary.strip() else None,
    )
