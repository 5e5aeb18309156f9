"""What the tests of a bot on its own share: a Transcripts over a fixed conversation."""

from app.domain.bot import Transcripts
from app.domain.store import Message


def transcripts_of(session_name: str, messages: list[Message], asked: list[int] | None = None) -> Transcripts:
    """A Transcripts of ``session_name`` over ``messages`` (oldest first), recording the counts
    asked for in ``asked``."""

    async def newest(name: str, count: int) -> list[Message]:
        assert name == session_name
        if asked is not None:
            asked.append(count)
        return messages[-count:]

    return newest
