"""--bot openai: any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI, vLLM,
Ollama, LiteLLM) through the official ``openai`` SDK, streamed (docs/bots.md).

The conversation so far is the context: the newest --bot-context messages within a rough
token budget (characters / 4), customer as ``user``, bot as ``assistant``, and an agent's
words as a ``system`` note (so that the model does not take them for its own). The model hands
off by calling the tool ``handoff_to_human(reason, summary)``; its arguments arrive in pieces
and are read once the stream ends. The SDK retries nothing (``max_retries=0``): the breaker
and the failure policy decide what a failure means (app.bots.guard).
"""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai

from app.domain.bot import BotFailure, Handoff, ReplyPart, Responder, Transcripts, Usage
from app.domain.store import Message, Session

logger = logging.getLogger(__name__)

HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "handoff_to_human",
        "description": "Hand the conversation to a human agent, who continues it in this chat.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "Why a person is needed."},
                "summary": {
                    "type": "string",
                    "description": "For the agent: what the customer wants and what was tried, "
                    "so that nobody asks the customer again.",
                },
            },
            "required": ["reason", "summary"],
        },
    },
}
CHARS_PER_TOKEN = 4


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
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (vLLM, Ollama) take any key; the SDK refuses to run without one.
            api_key=api_key or "unused",
            max_retries=0,
            timeout=openai.Timeout(read_timeout, connect=connect_timeout),
        )
        self._model = model
        self._prompt = system_prompt
        self._transcripts = transcripts
        self._context = context_messages
        self._budget = context_tokens * CHARS_PER_TOKEN

    async def close(self) -> None:
        await self._client.close()

    async def messages(self, session: Session, message: Message) -> list[dict[str, str]]:
        """The request's messages: the prompt, the recent conversation within the budget, the
        new message (always, cut to the budget if it alone is past it)."""
        recent = await self._transcripts(session["session_name"], self._context + 1)
        room = self._budget - len(self._prompt)
        newest = {"role": "user", "content": message["content"][: max(room, 1)]}
        room -= len(newest["content"])
        kept: list[dict[str, str]] = []
        for earlier in reversed([m for m in recent if m["id"] != message["id"]][-self._context :]):
            mapped = _mapped(earlier)
            if len(mapped["content"]) > room:
                break
            room -= len(mapped["content"])
            kept.append(mapped)
        return [{"role": "system", "content": self._prompt}, *reversed(kept), newest]

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        calls: dict[int, dict[str, str]] = {}
        began = finished = False
        try:
            request: dict[str, Any] = {
                "model": self._model,
                "messages": await self.messages(session, message),
                "stream": True,
                "tools": [HANDOFF_TOOL],
                "stream_options": {"include_usage": True},
            }
            chunks = await self._client.chat.completions.create(**request)
            async with chunks:
                async for chunk in chunks:
                    began = True
                    if chunk.usage is not None:
                        yield Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta is not None and delta.content:
                            yield delta.content
                        for call in (delta.tool_calls if delta is not None else None) or ():
                            _gather(calls.setdefault(call.index, {"name": "", "arguments": ""}), call)
                        if choice.finish_reason is not None:
                            finished = True
        except openai.APITimeoutError as exc:
            raise BotFailure("timeout", "the endpoint was too slow") from exc
        except openai.APIConnectionError as exc:
            raise BotFailure("cut" if began else "connect", type(exc).__name__) from exc
        except openai.RateLimitError as exc:
            raise BotFailure("rate_limited", "429") from exc
        except openai.APIStatusError as exc:
            raise BotFailure("status", str(exc.status_code)) from exc
        except (openai.APIResponseValidationError, ValueError) as exc:
            raise BotFailure("unreadable", type(exc).__name__) from exc
        except openai.APIError as exc:  # a cut stream surfaces here
            raise BotFailure("cut", type(exc).__name__) from exc
        if not finished:
            raise BotFailure("cut", "the stream ended without a finish reason")
        for call in calls.values():
            if call["name"] == "handoff_to_human":
                yield _handoff(call["arguments"])
            else:
                logger.debug("ignored a call of the unknown tool %r", call["name"][:64])


def _mapped(message: Message) -> dict[str, str]:
    if message["role"] == "customer":
        return {"role": "user", "content": message["content"]}
    if message["role"] == "bot":
        return {"role": "assistant", "content": message["content"]}
    return {"role": "system", "content": f"A human agent wrote to the customer: {message['content']}"}


def _gather(call: dict[str, str], delta: Any) -> None:
    function = delta.function
    if function is not None:
        call["name"] += function.name or ""
        call["arguments"] += function.arguments or ""


def _handoff(arguments: str) -> Handoff:
    """The model asked for a person: that happens even if its arguments cannot be read."""
    try:
        fields = json.loads(arguments or "{}")
    except ValueError:
        logger.warning("handoff_to_human with arguments that are not JSON")
        return Handoff("the assistant asked for a person", None)
    reason, summary = fields.get("reason"), fields.get("summary")
    return Handoff(
        reason if isinstance(reason, str) and reason else "the assistant asked for a person",
        summary if isinstance(summary, str) and summary else None,
    )
