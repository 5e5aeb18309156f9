"""Session state: status, holder and transcript, in Redis or in memory."""

from app.domain.store.base import (
    Action,
    Message,
    Role,
    Session,
    SessionExists,
    SessionNotFound,
    SessionStore,
    Status,
    StoreUnavailable,
    Transition,
    TransitionRefused,
)
from app.domain.store.memory import MemorySessionStore
from app.domain.store.redis_store import RedisSessionStore

__all__ = [
    "Action",
    "MemorySessionStore",
    "Message",
    "RedisSessionStore",
    "Role",
    "Session",
    "SessionExists",
    "SessionNotFound",
    "SessionStore",
    "Status",
    "StoreUnavailable",
    "Transition",
    "TransitionRefused",
]
