"""The store of a process that started while Redis was away.

It serves from memory, so that process keeps working on its own; when Redis answers, it writes
the sessions it holds into Redis where Redis has no record of them (no conversation is lost,
and none that another process already keeps in Redis is overwritten), then sends every call to
Redis. Calls made while the sessions move wait for the move, so none lands in the old store.
"""

import asyncio
import logging

from app.domain.store.actions import ActionsAsMoves
from app.domain.store.base import (
    DEFAULT_PAGE,
    Announce,
    AnnounceMessage,
    AnnounceStart,
    Message,
    Move,
    Page,
    Role,
    Session,
    SessionStore,
    Status,
    Swept,
    Transition,
)
from app.domain.store.memory import MemorySessionStore
from app.domain.store.redis_store import RedisSessionStore

logger = logging.getLogger(__name__)


class StartupFallbackStore(ActionsAsMoves):
    def __init__(self, memory: MemorySessionStore, redis: RedisSessionStore) -> None:
        self._memory = memory
        self._redis = redis
        self._current: SessionStore = memory
        self._ready = asyncio.Event()
        self._ready.set()

    @property
    def name(self) -> str:  # type: ignore[override]  # a class attribute elsewhere; here it follows the store in use
        return self._current.name

    @property
    def on_redis(self) -> bool:
        return self._current is self._redis

    async def move_to_redis(self) -> int:
        """Move to Redis; returns how many sessions Redis adopted. Raises StoreUnavailable
        (and stays on memory) if Redis fails meanwhile."""
        if self.on_redis:
            return 0
        self._ready.clear()
        try:
            await self._redis.upgrade()
            adopted = await self._redis.adopt(self._memory.export())
            self._current = self._redis
        finally:
            self._ready.set()
        return adopted

    async def _store(self) -> SessionStore:
        await self._ready.wait()
        return self._current

    async def create(self, session_name: str, *, announce: AnnounceStart | None = None) -> Session:
        return await (await self._store()).create(session_name, announce=announce)

    async def get(self, session_name: str) -> Session:
        return await (await self._store()).get(session_name)

    async def get_many(self, session_names: list[str]) -> dict[str, Session]:
        return await (await self._store()).get_many(session_names)

    async def get_or_create(
        self, session_name: str, *, announce: AnnounceStart | None = None
    ) -> tuple[Session, bool]:
        return await (await self._store()).get_or_create(session_name, announce=announce)

    async def change(
        self,
        session_name: str,
        move: Move,
        *,
        say: Message | None = None,
        announce: Announce | None = None,
        incarnation: str | None = None,
    ) -> Transition:
        store = await self._store()
        return await store.change(session_name, move, say=say, announce=announce, incarnation=incarnation)

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
        store = await self._store()
        return await store.add_message(
            session_name,
            role,
            content,
            agent_id,
            announce=announce,
            incarnation=incarnation,
            status_seq=status_seq,
        )

    async def bot_may_speak(self, session_name: str, status_seq: int, token: str) -> bool:
        return await (await self._store()).bot_may_speak(session_name, status_seq, token)

    async def bot_has_spoken(self, session_name: str, token: str) -> None:
        await (await self._store()).bot_has_spoken(session_name, token)

    async def list_sessions(
        self, status: Status, *, limit: int = DEFAULT_PAGE, after: str | None = None
    ) -> Page[Session]:
        return await (await self._store()).list_sessions(status, limit=limit, after=after)

    async def queue_position(self, session_name: str) -> int | None:
        return await (await self._store()).queue_position(session_name)

    async def count(self, status: Status) -> int:
        return await (await self._store()).count(status)

    async def messages(
        self, session_name: str, *, limit: int = DEFAULT_PAGE, after: str | None = None, notes: bool = False
    ) -> Page[Message]:
        return await (await self._store()).messages(session_name, limit=limit, after=after, notes=notes)

    async def sweep(self, now: float, *, announce: Announce | None = None) -> Swept:
        return await (await self._store()).sweep(now, announce=announce)
