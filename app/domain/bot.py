"""The bot behind POST /chatbot/api/chat and /chat/stream: a small pluggable responder, no
model download.

A responder answers in one of two forms, and gets the other for free by subclassing
``Responder``:

- one-shot: ``async reply(session, message) -> BotReply``, the whole answer at once;
- streamed: ``stream(session, message)``, an async iterator of the answer's text pieces as
  they are produced (an async generator), optionally with a ``Handoff`` among them to ask for
  a human once the answer is complete.

``/api/chat`` waits for the complete answer; ``/api/chat/stream`` forwards each piece to its
client as it comes. Either way the stored and published bot message is the concatenation of
the pieces, and a ``Handoff`` escalates the session after it, as ``BotReply.escalate`` does.
An object that is not a ``Responder`` but has either method works too (``reply_of`` and
``stream_of`` adapt it), so responders written against the earlier one-shot protocol keep
working unchanged.
"""

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.domain.store import Message, Session

HANDOFF_REASON = "customer asked for a human"


@dataclass(frozen=True, slots=True)
class BotReply:
    text: str
    # Ask for a human after answering (the session moves to waiting_agent).
    escalate: bool = False
    reason: str | None = None
    # For the agent who takes over (the session's handoff_summary, the transfer_request's
    # summary): what the customer wants, so that nobody asks them again.
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class Handoff:
    """Yielded by a streamed answer: ask for a human once the answer is complete (at most one
    counts; the last one's reason and summary win). Its position among the text pieces does
    not matter."""

    reason: str | None = None
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Yielded by a streamed answer whose endpoint reported what it used (counted in the
    metrics; never shown to anybody)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


ReplyPart = str | Handoff | Usage

# Why a bot could not answer (BotFailure.kind, a metric label).
FAILURE_KINDS = ("connect", "timeout", "status", "rate_limited", "unreadable", "cut", "circuit_open", "error")


class BotFailure(Exception):
    """A bot that could not answer. The chat hands the conversation to a person (reason
    ``bot_unavailable``) instead of failing; ``kind`` says why (one of FAILURE_KINDS) and
    ``detail`` is for the log (never a message's content or a key)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown bot failure kind {kind!r}")
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class Responder:
    """Base class of bots: override ``reply`` or ``stream`` (or both); each defaults to the
    other, so a one-shot bot can be streamed (in one piece) and a streaming bot asked for its
    complete answer.

    A bot that needs the conversation so far reads it through a ``Transcripts`` given to it
    when it is made (app.bots.choose does so for the bots of --bot)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.reply is Responder.reply and cls.stream is Responder.stream:
            raise TypeError(f"{cls.__name__} must override reply() or stream()")

    async def reply(self, session: Session, message: Message) -> BotReply:
        """The complete answer: the streamed pieces, collected."""
        return await collect(self.stream(session, message))

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        """The answer in pieces: the one-shot reply as a single piece (and its hand-off)."""
        answer = await self.reply(session, message)
        yield answer.text
        if answer.escalate:
            yield Handoff(answer.reason, answer.summary)


async def collect(
    parts: AsyncIterator[ReplyPart], on_text: Callable[[str], Awaitable[None]] | None = None
) -> BotReply:
    """The complete answer of a streamed one; ``on_text`` sees each non-empty text piece as it
    arrives (the streaming endpoint forwards it to its client)."""
    texts: list[str] = []
    handoff: Handoff | None = None
    async for part in parts:
        if isinstance(part, Handoff):
            handoff = part
        elif isinstance(part, Usage):
            continue
        elif part:
            texts.append(part)
            if on_text is not None:
                await on_text(part)
    if handoff is None:
        return BotReply("".join(texts))
    return BotReply("".join(texts), escalate=True, reason=handoff.reason, summary=handoff.summary)


async def reply_of(responder: Any, session: Session, message: Message) -> BotReply:
    """The one-shot answer of any responder: its ``reply``, else its collected ``stream``."""
    if callable(getattr(responder, "reply", None)):
        answer: BotReply = await responder.reply(session, message)
        return answer
    return await collect(responder.stream(session, message))


def stream_of(responder: Any, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
    """The streamed answer of any responder: its ``stream``, else its ``reply`` in one piece."""
    if callable(getattr(responder, "stream", None)):
        parts: AsyncIterator[ReplyPart] = responder.stream(session, message)
        return parts
    return _in_one_piece(responder, session, message)


async def _in_one_piece(responder: Any, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
    answer: BotReply = await responder.reply(session, message)
    yield answer.text
    if answer.escalate:
        yield Handoff(answer.reason, answer.summary)


# The newest messages of a session, at most the given number, oldest first (what a bot that
# needs the conversation so far reads it through).
Transcripts = Callable[[str, int], Awaitable[list[Message]]]


# A phrase: up to and including its punctuation and the spaces after it (or the end).
PHRASE = re.compile(r"[^,.!?;:，。！？；：]*(?:[,.!?;:，。！？；：]+\s*|$)")


def phrases(text: str) -> list[str]:
    """``text`` cut after its punctuation, e.g. ``["Hello! ", "How can I help you today?"]``;
    the pieces concatenate to ``text`` exactly."""
    pieces = [piece for piece in PHRASE.findall(text) if piece]
    return pieces if "".join(pieces) == text else [text]


class RuleBasedResponder(Responder):
    """Answers in one line, streamed a phrase at a time; hands off when the customer asks for
    a person.

    ``pace``: seconds between pieces (0 by default: each piece is still a separate step of the
    event loop, so a streaming client gets it on its own, with no real delay)."""

    HANDOFF = re.compile(
        r"\b(human|agent|person|operator|representative|real person)\b|人工|转人工|客服",
        re.IGNORECASE,
    )
    GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening))\b|你好", re.IGNORECASE)

    def __init__(self, pace: float = 0.0) -> None:
        if pace < 0:
            raise ValueError("pace must be >= 0")
        self.pace = pace

    def answer(self, text: str) -> BotReply:
        """The whole answer to the customer's ``text`` (deterministic, no model)."""
        if self.HANDOFF.search(text):
            return BotReply(
                "I'm connecting you with a human agent. Please stay here.",
                escalate=True,
                reason=HANDOFF_REASON,
            )
        if self.GREETING.search(text):
            return BotReply("Hello! I'm the Switchboard assistant. How can I help you today?")
        if text.rstrip().endswith("?"):
            return BotReply(
                "Good question. I can help with common requests; "
                "type 'human' at any time to talk to a person."
            )
        return BotReply("Thanks, noted. Type 'human' at any time to talk to a person.")

    async def stream(self, session: Session, message: Message) -> AsyncIterator[ReplyPart]:
        answer = self.answer(message["content"])
        for index, piece in enumerate(phrases(answer.text)):
            if index:
                await asyncio.sleep(self.pace)
            yield piece
        if answer.escalate:
            yield Handoff(answer.reason, answer.summary)
