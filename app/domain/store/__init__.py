"""Session state: status, holder and transcript, in Redis or in memory."""

from app.domain.store.base import (
    Action,
    Role,
    Status,
    Message,
    Session,
    SessionExists,
    SessionNotFound,
    SessionStore,
    StoreUnavailable,
    Transition,
    TransitionRefused,
)
from app.domain.store.memory import MemorySessionStore
from app.domain.store.redis_store import RedisSessionStore

__all__ = [
    "Action",
    "Role",
    "Status",
    "MemorySessionStore",
    "Message",
    "RedisSessionStore",
    "Session",
    "SessionExists",
    "SessionNotFound",
    "SessionStore",
    "StoreUnavailable",
    "Transition",
    "TransitionRefused",
]
