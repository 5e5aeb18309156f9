"""The bot's fence in the store (SessionStore.bot_may_speak, docs/bots.md "The race"): a
streamed reply's pieces pass only while the session is bot_active at the status_seq the reply
began at; a change that moves a bot_active session answers only once the pieces let through
are written; a bot message of a turn the session has left is refused. Memory, and a real
redis-server."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.domain.store import MemorySessionStore, SessionStore, TransitionRefused
from app.domain.store.base import BOT_LEASE
from app.domain.store.redis_store import RedisSessionStore

HELD = 0.2  # how long a test holds a lease before giving it back


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The suite's redis-server for the Redis backend (an async fixture cannot ask for it)."""
    return str(request.getfixturevalue("redis_url")) if backend == "redis" else None


@pytest.fixture
async def store(store_url: str | None) -> AsyncIterator[SessionStore]:
    if store_url is None:
        yield MemorySessionStore()
        return
    client = Redis.from_url(store_url)
    redis_store = RedisSessionStore(client)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        await client.aclose()


async def test_the_fence_opens_only_for_the_turn_the_reply_began_in(store: SessionStore) -> None:
    session = await store.create("fence-1")
    turn = session["status_seq"]
    assert await store.bot_may_speak("fence-1", turn, "r1")
    await store.bot_has_spoken("fence-1", "r1")
    assert not await store.bot_may_speak("fence-1", turn + 1, "r2")
    await store.apply("fence-1", "takeover", "agent-1")
    assert not await store.bot_may_speak("fence-1", turn, "r3")
    released = (await store.apply("fence-1", "release", "agent-1")).session
    # bot_active again, but a later turn: the reply begun before the takeover stays out.
    assert not await store.bot_may_speak("fence-1", turn, "r4")
    assert await store.bot_may_speak("fence-1", released["status_seq"], "r5")
    assert not await store.bot_may_speak("nobody", turn, "r6")


async def test_a_bot_message_of_a_turn_the_session_left_is_refused(store: SessionStore) -> None:
    session = await store.create("fence-2")
    turn = session["status_seq"]
    await store.add_message("fence-2", "bot", "in time", status_seq=turn)
    await store.apply("fence-2", "takeover", "agent-1")
    await store.apply("fence-2", "release", "agent-1")
    with pytest.raises(TransitionRefused, match="changed hands"):
        await store.add_message("fence-2", "bot", "too late", status_seq=turn)
    page = await store.messages("fence-2")
    assert [m["content"] for m in page.items] == ["in time"]


async def test_a_takeover_answers_after_the_pieces_let_through(store: SessionStore) -> None:
    session = await store.create("fence-3")
    assert await store.bot_may_speak("fence-3", session["status_seq"], "r1")
    takeover = asyncio.create_task(store.apply("fence-3", "takeover", "agent-1"))
    await asyncio.sleep(HELD)
    assert not takeover.done(), "the takeover answered while a piece was being written"
    await store.bot_has_spoken("fence-3", "r1")
    async with asyncio.timeout(BOT_LEASE):
        transition = await takeover
    assert transition.session["status"] == "agent_active"


async def test_a_lease_never_given_back_lapses(store: SessionStore) -> None:
    """A process that died holding a lease holds up a takeover for BOT_LEASE at most."""
    session = await store.create("fence-4")
    assert await store.bot_may_speak("fence-4", session["status_seq"], "r1")
    async with asyncio.timeout(BOT_LEASE + 2.0):
        transition = await store.apply("fence-4", "escalate")
    assert transition.session["status"] == "waiting_agent"


async def test_changes_from_other_states_do_not_wait(store: SessionStore) -> None:
    session = await store.create("fence-5")
    await store.apply("fence-5", "escalate")
    assert not await store.bot_may_speak("fence-5", session["status_seq"], "r1")
    async with asyncio.timeout(BOT_LEASE / 2):
        await store.apply("fence-5", "takeover", "agent-1")
