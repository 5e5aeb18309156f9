"""In-process session store. Each method runs without an await between read and write, so it
is atomic on the event loop without a lock. Its events are published after the change, through
the broker (``publish``): in one process nothing can die between the two and leave the other."""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.domain.store import rules
from app.domain.store.actions import ActionsAsMoves
from app.domain.store.base import (
    BOT_LEASE,
    DEFAULT_PAGE,
    FRONT_SEQ,
    NEW_SEQ,
    Announce,
    AnnounceMessage,
    AnnounceStart,
    Bounds,
    Message,
    Move,
    Outgoing,
    Page,
    Role,
    Session,
    SessionExists,
    SessionNotFound,
    Status,
    Swept,
    Transition,
    page_after,
    parse_session_cursor,
    queue_order,
    seq_at,
    session_cursor,
)


@dataclass(slots=True)
class _Transcript:
    """The newest messages within the bounds, and their stored size."""

    messages: deque[Message] = field(default_factory=deque)
    size: int = 0

    def append(self, message: Message, bounds: Bounds) -> None:
        self.messages.append(message)
        self.size += rules.size(message)
        while len(self.messages) > 1 and (
            len(self.messages) > bounds.transcript_messages or self.size > bounds.transcript_bytes
        ):
            self.size -= rules.size(self.messages.popleft())


class _Speakers:
    """The bot leases of SessionStore.bot_may_speak, in memory: a reply's piece may be written
    across an await (the socket write), so a change still waits for the pieces let through."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, float]] = {}

    def enter(self, session_name: str, token: str) -> None:
        self._held.setdefault(session_name, {})[token] = time.monotonic() + BOT_LEASE

    def leave(self, session_name: str, token: str) -> None:
        held = self._held.get(session_name)
        if held is not None:
            held.pop(token, None)
            if not held:
                del self._held[session_name]

    async def quiet(self, session_name: str) -> None:
        """Return once no lease on the session is held (or the last one has lapsed)."""
        for _ in range(int(BOT_LEASE / LEASE_POLL) + 1):
            held = self._held.get(session_name)
            if not held or max(held.values()) <= time.monotonic():
                self._held.pop(session_name, None)
                return
            await asyncio.sleep(LEASE_POLL)


# How often a change that waits for a bot's lease looks again.
LEASE_POLL = 0.002

# Publishes an envelope on a channel (a broker's publish); returns the event id.
Publish = Callable[[str, dict[str, Any]], Awaitable[str]]


class MemorySessionStore(ActionsAsMoves):
    name = "memory"

    def __init__(self, bounds: Bounds | None = None, publish: Publish | None = None) -> None:
        """Without ``publish`` the store publishes nothing (``announce`` is then refused)."""
        self.bounds = bounds if bounds is not None else Bounds()
        self._publish = publish
        self._sessions: dict[str, Session] = {}
        self._transcripts: dict[str, _Transcript] = {}
        self._last_seq = 0
        self._speakers = _Speakers()

    async def create(self, session_name: str, *, announce: AnnounceStart | None = None) -> Session:
        if session_name in self._sessions:
            raise SessionExists(session_name)
        return await self._started(self._insert(session_name), announce)

    async def get(self, session_name: str) -> Session:
        return self._load(session_name).copy()

    async def get_many(self, session_names: list[str]) -> dict[str, Session]:
        return {n: self._sessions[n].copy() for n in session_names if n in self._sessions}

    async def get_or_create(
        self, session_name: str, *, announce: AnnounceStart | None = None
    ) -> tuple[Session, bool]:
        if session_name in self._sessions:
            return await self.get(session_name), False
        return await self._started(self._insert(session_name), announce), True

    async def _started(self, session: Session, announce: AnnounceStart | None) -> Session:
        if announce is not None:
            await self._announce(announce(session))
        return session

    async def change(
        self,
        session_name: str,
        move: Move,
        *,
        say: Message | None = None,
        announce: Announce | None = None,
        incarnation: str | None = None,
    ) -> Transition:
        session = self._load(session_name)
        rules.check_conversation(session, incarnation)
        moved = move(session.copy())
        if moved is None:
            return Transition(session.copy(), session["status"], False, session.copy())
        if moved["status_seq"] == FRONT_SEQ:
            moved["status_seq"] = self._front_seq(moved["status"], session_name)
        elif moved["status_seq"] == NEW_SEQ:
            moved["status_seq"] = self._next_seq()
        self._sessions[session_name] = moved
        if say is not None:
            self._transcripts[session_name].append(say, self.bounds)
        transition = Transition(moved.copy(), session["status"], True, session.copy())
        if announce is not None:
            await self._announce(announce(transition))
        if session["status"] == "bot_active":
            await self._speakers.quiet(session_name)
        return transition

    def _front_seq(self, status: Status, session_name: str) -> int:
        """One before the first of ``status``'s queue (the next number if it is empty)."""
        seqs = [
            s["status_seq"] for n, s in self._sessions.items() if s["status"] == status and n != session_name
        ]
        return min(seqs) - 1 if seqs else self._next_seq()

    async def bot_may_speak(self, session_name: str, status_seq: int, token: str) -> bool:
        session = self._sessions.get(session_name)
        if session is None or not rules.bot_may_speak(session, status_seq):
            return False
        self._speakers.enter(session_name, token)
        return True

    async def bot_has_spoken(self, session_name: str, token: str) -> None:
        self._speakers.leave(session_name, token)

    async def add_message(
        self,
        session_name: str,
        role: Role,
        content: str,
        agent_id: str | None = None,
        *,
        announce: AnnounceMessage | None = None,
        incarnation: str | None = None,
        status_seq: int | None = None,
    ) -> tuple[Session, Message]:
        session = self._load(session_name)
        rules.check_conversation(session, incarnation)
        rules.check_can_speak(session, role, agent_id)
        rules.check_turn(session, status_seq)
        message = rules.new_message(role, content, agent_id)
        self._transcripts[session_name].append(message, self.bounds)
        answered = rules.after_message(session, message)
        if answered is not None:
            self._sessions[session_name] = answered
        if announce is not None:
            await self._announce(announce(session, message))
        return session.copy(), message.copy()

    async def _announce(self, events: Sequence[Outgoing]) -> None:
        if events and self._publish is None:
            raise RuntimeError("this store was made without a broker: it cannot announce")
        for channel, event in events:
            assert self._publish is not None
            await self._publish(channel, event)

    async def list_sessions(
        self, status: Status, *, limit: int = DEFAULT_PAGE, after: str | None = None
    ) -> Page[Session]:
        start = parse_session_cursor(after)
        found = sorted(
            (s for s in self._sessions.values() if s["status"] == status and s["status_seq"] > start),
            key=queue_order,
        )
        items = [s.copy() for s in found[:limit]]
        more = len(found) > limit
        return Page(items, session_cursor(items[-1]["status_seq"]) if more else None)

    async def queue_position(self, session_name: str) -> int | None:
        waiting = sorted(
            (s for s in self._sessions.values() if s["status"] == "waiting_agent"), key=queue_order
        )
        names = [s["session_name"] for s in waiting]
        return names.index(session_name) + 1 if session_name in names else None

    async def count(self, status: Status) -> int:
        return sum(1 for s in self._sessions.values() if s["status"] == status)

    async def messages(
        self, session_name: str, *, limit: int = DEFAULT_PAGE, after: str | None = None, notes: bool = False
    ) -> Page[Message]:
        self._load(session_name)
        page = page_after(list(self._transcripts[session_name].messages), limit, after, notes=notes)
        return Page([m.copy() for m in page.items], page.next_cursor)

    async def sweep(self, now: float, *, announce: Announce | None = None) -> Swept:
        closed: list[Transition] = []
        deleted = 0
        expired_before = seq_at(now - self.bounds.retention)
        for name, session in list(self._sessions.items()):
            if session["status"] == "closed" and session["status_seq"] <= expired_before:
                del self._sessions[name], self._transcripts[name]
                deleted += 1
                continue
            transcript = self._transcripts[name].messages
            newest = transcript[-1] if transcript else None
            if rules.is_idle(session, newest, now, self.bounds.idle_ttl):
                # One event loop: no rival.
                closed.append(await self.apply(name, "close", announce=announce))
        return Swept(closed, deleted)

    def export(self) -> list[tuple[Session, list[Message]]]:
        """Every session with its transcript (copies), to move them elsewhere."""
        return [
            (session.copy(), [m.copy() for m in self._transcripts[name].messages])
            for name, session in self._sessions.items()
        ]

    def _next_seq(self) -> int:
        self._last_seq = rules.next_seq(self._last_seq, time.time())
        return self._last_seq

    def _load(self, session_name: str) -> Session:
        try:
            return self._sessions[session_name]
        except KeyError:
            raise SessionNotFound(session_name) from None

    def _insert(self, session_name: str) -> Session:
        session = rules.new_session(session_name, self._next_seq())
        self._sessions[session_name] = session
        self._transcripts[session_name] = _Transcript()
        return session.copy()
