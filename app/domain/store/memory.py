"""In-process session store. Each method runs without an await between read and write, so it
is atomic on the event loop without a lock."""

import itertools
from collections import deque

from app.domain.store import rules
from app.domain.store.base import (
    TRANSCRIPT_LIMIT,
    Action,
    Message,
    Role,
    Session,
    SessionExists,
    SessionNotFound,
    SessionStore,
    Status,
    Transition,
    queue_order,
)


class MemorySessionStore(SessionStore):
    name = "memory"

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._transcripts: dict[str, deque[Message]] = {}
        self._status_seq = itertools.count(1)

    async def create(self, session_name: str) -> Session:
        if session_name in self._sessions:
            raise SessionExists(session_name)
        return self._insert(session_name)

    async def get(self, session_name: str) -> Session:
        return self._load(session_name).copy()

    async def get_or_create(self, session_name: str) -> tuple[Session, bool]:
        if session_name in self._sessions:
            return await self.get(session_name), False
        return self._insert(session_name), True

    async def apply(
        self, session_name: str, action: Action, agent_id: str | None = None, reason: str | None = None
    ) -> Transition:
        session = self._load(session_name)
        moved = rules.apply(session, action, agent_id, reason)
        if moved is None:
            return Transition(session.copy(), session["status"], False)
        moved["status_seq"] = next(self._status_seq)
        self._sessions[session_name] = moved
        return Transition(moved.copy(), session["status"], True)

    async def add_message(
        self, session_name: str, role: Role, content: str, agent_id: str | None = None
    ) -> tuple[Session, Message]:
        session = self._load(session_name)
        rules.check_can_speak(session, role, agent_id)
        message = rules.new_message(role, content, agent_id)
        self._transcripts[session_name].append(message)
        return session.copy(), message.copy()

    async def list_sessions(self, status: Status) -> list[Session]:
        found = [s.copy() for s in self._sessions.values() if s["status"] == status]
        return sorted(found, key=queue_order)

    async def messages(self, session_name: str) -> list[Message]:
        self._load(session_name)
        return [m.copy() for m in self._transcripts[session_name]]

    def export(self) -> list[tuple[Session, list[Message]]]:
        """Every session with its transcript (copies), to move them elsewhere."""
        return [
            (session.copy(), [m.copy() for m in self._transcripts[name]])
            for name, session in self._sessions.items()
        ]

    def _load(self, session_name: str) -> Session:
        try:
            return self._sessions[session_name]
        except KeyError:
            raise SessionNotFound(session_name) from None

    def _insert(self, session_name: str) -> Session:
        session = rules.new_session(session_name, next(self._status_seq))
        self._sessions[session_name] = session
        self._transcripts[session_name] = deque(maxlen=TRANSCRIPT_LIMIT)
        return session.copy()
