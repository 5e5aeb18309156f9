"""The rule-based bot behind POST /chatbot/api/chat: hands off on request, otherwise answers."""

import pytest

from app.domain.bot import BotReply, Responder, RuleBasedResponder
from app.domain.store import rules

MAX_CONTENT = 4000  # docs/api.md: content is 1 to 4,000 characters
MAX_REASON = 500  # docs/api.md: reason at most 500
BRIEF = 300  # a brief answer: one line, at most this many characters

HANDOFF_REQUESTS = [
    "human",
    "agent",
    "I want a real person",
    "转人工",
    "人工",
    "HUMAN please",
    "Can I talk to an agent?",
    "let me speak to a person",
    "我要转人工服务",
]
GREETINGS = ["hi", "Hello", "hey there", "Good morning!", "你好"]
ORDINARY = [
    "What are your opening hours?",
    "My order has not arrived yet",
    "Thanks",
    "How do I reset my password?",
    "x",
    "1234",
    "🙂",
    "a" * MAX_CONTENT,
]


async def ask(text: str) -> BotReply:
    """The responder's reply to a customer message ``text`` in a fresh bot_active session."""
    responder: Responder = RuleBasedResponder()
    session = rules.new_session("s1", status_seq=1)
    message = rules.new_message("customer", text, None)
    return await responder.reply(session, message)


def assert_valid_reply(reply: BotReply) -> None:
    """A reply the store and API accept as a bot message: 1 to 4,000 characters of text."""
    assert isinstance(reply, BotReply)
    assert isinstance(reply.text, str)
    assert reply.text.strip()
    assert len(reply.text) <= MAX_CONTENT


@pytest.mark.parametrize("text", HANDOFF_REQUESTS)
async def test_asking_for_a_human_escalates_with_reason(text: str) -> None:
    """Asking for a person escalates, with a reason, and still tells the customer what happens."""
    reply = await ask(text)
    assert_valid_reply(reply)
    assert reply.escalate is True
    assert isinstance(reply.reason, str) and reply.reason.strip()
    assert len(reply.reason) <= MAX_REASON


@pytest.mark.parametrize("text", GREETINGS + ORDINARY)
async def test_other_messages_answer_briefly_without_escalating(text: str) -> None:
    """Greetings and ordinary messages get a short one-line answer and no hand-off."""
    reply = await ask(text)
    assert_valid_reply(reply)
    assert reply.escalate is False
    assert reply.reason is None
    assert len(reply.text) <= BRIEF
    assert "\n" not in reply.text


@pytest.mark.parametrize("text", HANDOFF_REQUESTS + GREETINGS + ORDINARY)
async def test_reply_is_deterministic(text: str) -> None:
    """The same message gets the same answer (no randomness, no model)."""
    assert await ask(text) == await ask(text)


def test_bot_reply_is_frozen() -> None:
    """A BotReply cannot be changed once made; by default it does not escalate."""
    reply = BotReply("hello")
    assert (reply.escalate, reply.reason) == (False, None)
    with pytest.raises(AttributeError):
        reply.text = "changed"  # type: ignore[misc]  # the point: a frozen dataclass refuses it
