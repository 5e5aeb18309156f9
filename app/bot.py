"""The bot behind POST /chatbot/api/chat: a small pluggable responder, no model download."""

import re
from dataclasses import dataclass
from typing import Protocol

from app.store import Message, Session

HANDOFF_REASON = "customer asked for a human"


@dataclass(frozen=True, slots=True)
class BotReply:
    text: str
    # Ask for a human after answering (the session moves to waiting_agent).
    escalate: bool = False
    reason: str | None = None


class Responder(Protocol):
    async def reply(self, session: Session, message: Message) -> BotReply: ...


class RuleBasedResponder:
    """Answers in one line; hands off when the customer asks for a person."""

    HANDOFF = re.compile(
        r"\b(human|agent|person|operator|representative|real person)\b|人工|转人工|客服",
        re.IGNORECASE,
    )
    GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening))\b|你好", re.IGNORECASE)

    async def reply(self, session: Session, message: Message) -> BotReply:
        text = message["content"]
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
