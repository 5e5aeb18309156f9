"""The bot of --bot: made from the settings, reading transcripts through the app's store.

The openai and webhook bots are imported only when chosen: a process on the embedded rules
bot never loads an HTTP client for them.
"""

from collections import deque
from pathlib import Path
from typing import Any

from app.domain.bot import RuleBasedResponder, Transcripts
from app.domain.store import Message, SessionStore
from app.process.settings import Settings

# The system prompt of --bot openai without --bot-prompt.
DEFAULT_PROMPT = (
    "You are the customer service assistant of this company, in a live chat. Answer briefly, "
    "politely and in the customer's language. Never invent facts about orders, accounts or "
    "policies. When the customer asks for a person, or you cannot help, call "
    "handoff_to_human with the reason and a summary for the agent, and tell the customer a "
    "person will continue here."
)


def make_bot(settings: Settings, transcripts: Transcripts) -> Any:
    """The bot ``settings.bot`` names; ValueError if it cannot be made (a prompt file that
    cannot be read)."""
    if settings.bot == "openai":
        from app.bots.openai_bot import OpenAIResponder

        assert settings.bot_url is not None and settings.bot_model is not None  # Settings checks
        return OpenAIResponder(
            base_url=settings.bot_url,
            api_key=settings.bot_api_key,
            model=settings.bot_model,
            system_prompt=_prompt(settings.bot_prompt),
            transcripts=transcripts,
            context_messages=settings.bot_context,
            connect_timeout=settings.bot_connect_timeout,
            read_timeout=settings.bot_timeout,
        )
    if settings.bot == "webhook":
        from app.bots.webhook_bot import WebhookResponder

        assert settings.bot_url is not None
        return WebhookResponder(
            url=settings.bot_url,
            secret=settings.bot_secret,
            transcripts=transcripts,
            context_messages=settings.bot_context,
            connect_timeout=settings.bot_connect_timeout,
            read_timeout=settings.bot_timeout,
        )
    return RuleBasedResponder()


def _prompt(path: str | None) -> str:
    if path is None:
        return DEFAULT_PROMPT
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the bot prompt {path}: {exc}") from exc
    if not text:
        raise ValueError(f"the bot prompt {path} is empty")
    return text


async def newest_messages(store: SessionStore, session_name: str, count: int) -> list[Message]:
    """The newest ``count`` messages of a session, oldest first (a transcript is bounded, so
    reading it through is too)."""
    newest: deque[Message] = deque(maxlen=count)
    after: str | None = None
    while True:
        page = await store.messages(session_name, after=after)
        newest.extend(page.items)
        if page.next_cursor is None or not page.items:
            return list(newest)
        after = page.next_cursor
