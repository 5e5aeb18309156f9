"""Session store on Redis: ``session:{name}`` (JSON), ``messages:{name}`` (a list within the
transcript's bounds), ``messages_size:{name}`` (its bytes) and ``bot_leases:{name}``
(redis_leases), in one hash slot per session, and the status indexes (redis_indexes). Every key
expires (app.domain.store.base.Bounds): every write renews a session's keys, and the sweeper
closes idle sessions and deletes closed ones past retention, index entries with them.

One action is one script (docs/architecture.md, "One action, one script"). A change starts
from the session as this process last knew it (or a GET), applies the pure rules of
app.domain.store.rules in Python, and commits with ACTION_SCRIPT (redis_scripts): if the
session is still those bytes, it writes the session, the transcript, the indexes (one Redis)
and publishes every event the change causes, atomically; if not, it answers the session as it
is now, and the change is worked out again from that: of concurrent takeovers one commits,
the others get 409. On a Redis Cluster a script reaches the session's slot only: indexes are
kept around the commit, events of other slots wait in the session's outbox (session_outbox).
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app.domain.store import rules
from app.domain.store.actions import ActionsAsMoves
from app.domain.store.attempts import Attempt, Committed, Conflict, T
from app.domain.store.base import (
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
    StoreError,
    StoreUnavailable,
    Swept,
    Transition,
    TransitionRefused,
    page_after,
    parse_session_cursor,
    queue_order,
    session_cursor,
)
from app.domain.store.recent import RECENT_SESSIONS, RecentSessions
from app.domain.store.redis_indexes import StatusIndexes, StoreKeys, ms
from app.domain.store.redis_leases import BotLeases
from app.domain.store.redis_scripts import (
    ACTION,
    ACTION_SCRIPT,
    ADOPT_SCRIPT,
)
from app.domain.store.redis_sweep import IndexWalk
from app.domain.store.redis_upgrade import adopt_one, upgrade_indexes
from realtime.command_pipe import CommandPipe
from realtime.event_script import NO_EVENTS
from realtime.redis_replies import as_text
from realtime.scripted_events import Planned, ScriptedEvents

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 64


class RedisSessionStore(ActionsAsMoves):
    name = "redis"

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        timeout: float = 5.0,
        bounds: Bounds | None = None,
        namespace: str = "",
        events: ScriptedEvents | None = None,
        pipe: CommandPipe | None = None,
    ) -> None:
        """``events``: how the broker's events go into this store's scripts; without it the
        store publishes nothing (``announce`` is then refused). ``pipe``: the connection the
        hot path (a change's GET and script) takes instead of ``redis``'s pool; the store
        closes it."""
        self._redis = redis
        self.bounds = bounds if bounds is not None else Bounds()
        self.keys = StoreKeys(namespace)
        self._indexes = StatusIndexes(redis, self.keys, self.bounds)
        self._events = events
        self._pipe = pipe
        # One Redis: the status indexes change in the commit's script. A cluster: around it.
        self._indexes_in_script = not isinstance(redis, RedisCluster)
        self._action = redis.register_script(ACTION_SCRIPT)
        self._adopt_script = redis.register_script(ADOPT_SCRIPT)
        self._walk = IndexWalk(redis, self.keys, self._indexes, in_script=self._indexes_in_script)
        self._leases = BotLeases(redis, self.keys, pipe)
        self._timeout = timeout
        self._down = False  # so that an outage is logged once, not once per request
        # The sessions as this process last wrote or saw them: a change starts from there and
        # needs no GET when nobody else changed the session since (the script compares bytes).
        self._recent = RecentSessions(RECENT_SESSIONS)

    async def close(self) -> None:
        if self._pipe is not None:
            await self._pipe.close()

    async def create(self, session_name: str, *, announce: AnnounceStart | None = None) -> Session:
        session, created = await self.get_or_create(session_name, announce=announce)
        if not created:
            raise SessionExists(session_name)
        return session

    async def get(self, session_name: str) -> Session:
        raw = await self._call(lambda: self._redis.get(self.keys.session(session_name)))
        if raw is None:
            raise SessionNotFound(session_name)
        return _decode(raw)

    async def get_many(self, session_names: list[str]) -> dict[str, Session]:
        raws = await self._call(lambda: self._get_all([self.keys.session(n) for n in session_names]))
        return {n: _decode(raw) for n, raw in zip(session_names, raws, strict=True) if raw is not None}

    async def get_or_create(
        self, session_name: str, *, announce: AnnounceStart | None = None
    ) -> tuple[Session, bool]:
        async def create(raw: bytes | str | None) -> "Committed[tuple[Session, bool]] | Conflict":
            if raw is not None:
                return Committed((_decode(raw), False), None, [], raw, wrote=False)
            session = rules.new_session(session_name, NEW_SEQ)
            events = announce(session) if announce is not None else ()
            outcome = await self._commit_change(session_name, None, session, None, events)
            if isinstance(outcome, Conflict):
                return outcome  # created by somebody else meanwhile: that one, then
            return Committed((outcome.result, True), outcome.planned, outcome.events_reply, outcome.stored)

        # Read from Redis, not from memory: an answer that it exists must be true.
        return await self._retrying(session_name, create, recent=False)

    async def change(
        self,
        session_name: str,
        move: Move,
        *,
        say: Message | None = None,
        announce: Announce | None = None,
        incarnation: str | None = None,
    ) -> Transition:
        async def transition(raw: bytes | str | None) -> "Committed[Transition] | Conflict":
            session = _found(session_name, raw)
            rules.check_conversation(session, incarnation)
            moved = move(session.copy())
            if moved is None:
                return Committed(
                    Transition(session, session["status"], False, session), None, [], raw, wrote=False
                )
            before = session["status"]
            events = announce(Transition(moved, before, True, session)) if announce is not None else ()
            outcome = await self._commit_change(session_name, raw, moved, before, events, say)
            if isinstance(outcome, Conflict):
                return outcome
            done = Transition(outcome.result, before, True, session)
            return Committed(done, outcome.planned, outcome.events_reply, outcome.stored)

        # On a cluster the first write of a transition goes to other shards (the queue number,
        # the index): the GET first makes sure the session's own shard answers.
        done = await self._retrying(session_name, transition, recent=self._indexes_in_script)
        if done.changed and done.previous_status == "bot_active":
            await self._call(lambda: self._leases.quiet(session_name))
        return done

    async def bot_may_speak(self, session_name: str, status_seq: int, token: str) -> bool:
        return await self._call(lambda: self._leases.take(session_name, status_seq, token))

    async def bot_has_spoken(self, session_name: str, token: str) -> None:
        await self._call(lambda: self._leases.give_back(session_name, token))

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
        message = rules.new_message(role, content, agent_id)

        async def append(raw: bytes | str | None) -> "Committed[tuple[Session, Message]] | Conflict":
            session = _found(session_name, raw)
            rules.check_conversation(session, incarnation)
            rules.check_can_speak(session, role, agent_id)
            rules.check_turn(session, status_seq)
            planned = self._plan(session_name, announce(session, message) if announce is not None else ())
            answered = rules.after_message(session, message)
            written = await self._commit(
                session_name, raw, answered, session["status"], planned, message=message
            )
            if isinstance(written, Conflict):
                return written  # the session changed (taken over?): check again
            stored = rules.encode(answered) if answered is not None else raw
            return Committed((session, message), planned, written[1], stored)

        return await self._retrying(session_name, append)

    async def list_sessions(
        self, status: Status, *, limit: int = DEFAULT_PAGE, after: str | None = None
    ) -> Page[Session]:
        start = parse_session_cursor(after)
        entries = await self._call(
            functools.partial(self._indexes.entries, self.keys.status(status), f"({start}", "+inf", limit)
        )
        if not entries:
            return Page([], None)
        names = [as_text(name) for name, _score in entries]
        raws = await self._call(lambda: self._get_all([self.keys.session(n) for n in names]))
        sessions = [_decode(raw) for raw in raws if raw is not None]
        found = sorted((s for s in sessions if s["status"] == status), key=queue_order)
        more = len(entries) == limit
        return Page(found, session_cursor(int(entries[-1][1])) if more else None)

    async def queue_position(self, session_name: str) -> int | None:
        rank: Any = await self._call(
            lambda: self._redis.zrank(self.keys.status("waiting_agent"), session_name)
        )
        return None if rank is None else int(rank) + 1

    async def count(self, status: Status) -> int:
        return int(await self._call(lambda: self._redis.zcard(self.keys.status(status))))

    async def messages(
        self, session_name: str, *, limit: int = DEFAULT_PAGE, after: str | None = None, notes: bool = False
    ) -> Page[Message]:
        async def read() -> tuple[int, list[bytes]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(self.keys.session(session_name))
                pipe.lrange(self.keys.messages(session_name), 0, -1)
                exists, raws = await pipe.execute()
            return exists, raws

        exists, raws = await self._call(read)
        if not exists:
            raise SessionNotFound(session_name)
        return page_after([rules.decode(raw) for raw in raws], limit, after, notes=notes)

    async def sweep(self, now: float, *, announce: Announce | None = None) -> Swept:
        closed: list[Transition] = []
        idle, _ = await self._walk.entered_before(
            self._call, "bot_active", now - self.bounds.idle_ttl, newest=True
        )
        for name, session, newest in idle:
            if rules.is_idle(session, newest, now, self.bounds.idle_ttl):
                with contextlib.suppress(TransitionRefused, SessionNotFound):  # another sweeper
                    closed.append(await self.apply(name, "close", announce=announce))
        # Closed sessions past retention: deleted here, or by their keys' expiry just before.
        found, deleted = await self._walk.entered_before(self._call, "closed", now - self.bounds.retention)
        for name, session, _ in found:
            deleted += await self._call(functools.partial(self._walk.delete_closed, name, session))
        for status in ("waiting_agent", "agent_active"):
            # Only their keys' expiry ends these (nobody touched them for idle_ttl +
            # retention); what is found here is index entries left by it.
            await self._walk.entered_before(self._call, status, now - self.bounds.ttl(status))
        return Swept(closed, deleted)

    async def _get_all(self, keys: list[str]) -> list[bytes | None]:
        """GET of many sessions: one MGET on one Redis (a reply parsed at once: 8 times less
        than a pipeline of GETs at 1,000 sessions, docs/routing.md "What routing costs"); on a
        cluster, whose MGET keys must share a slot, a pipeline."""
        if self._indexes_in_script:
            return cast(list[bytes | None], await self._redis.mget(keys)) if keys else []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return await pipe.execute()

    def _plan(self, session_name: str, events: Sequence[Outgoing]) -> Planned | None:
        """The events' part of the commit's script (None: no events)."""
        if not events:
            return None
        if self._events is None:
            raise RuntimeError("this store was made without a broker: it cannot announce")
        return self._events.plan(events, home=session_name)

    async def _commit_change(
        self,
        session_name: str,
        read: bytes | str | None,
        session: Session,
        left: Status | None,
        events: Sequence[Outgoing],
        say: Message | None = None,
    ) -> "Committed[Session] | Conflict":
        """Write ``session`` (with ``say``, and its events) if the session is still ``read``.
        A session entering a status (its status_seq NEW_SEQ or FRONT_SEQ) leaves ``left``
        (None: a new session) and gets its number; one that keeps its status keeps it."""
        planned = self._plan(session_name, events)
        lives = session["status"]
        if self._indexes_in_script or session["status_seq"] not in (NEW_SEQ, FRONT_SEQ):
            written = await self._commit(session_name, read, session, lives, planned, message=say, left=left)
            if isinstance(written, Conflict):
                return written
            seq, events_reply = written
            stored: Session = {**session, "status_seq": seq} if seq is not None else session
            # What the script wrote: the same JSON with the number in its place.
            return Committed(stored, planned, events_reply, rules.encode(stored))
        # A cluster: the number from its own clock (or the queue's head), the indexes around
        # the commit.
        front = session["status_seq"] == FRONT_SEQ
        session = {**session, "status_seq": await self._indexes.next_seq(lives if front else None)}
        await self._indexes.enter(session)
        written = await self._commit(session_name, read, session, lives, planned, message=say)
        if isinstance(written, Conflict):
            if left != lives:
                await self._indexes.leave(session_name, lives)  # lost the race
            return written
        await self._indexes.after_commit(session, left)
        return Committed(session, planned, written[1], rules.encode(session))

    async def _commit(
        self,
        session_name: str,
        read: bytes | str | None,
        session: Session | None,
        lives: Status,
        planned: Planned | None,
        *,
        message: Message | None = None,
        left: Status | None = None,
    ) -> "tuple[int | None, list[str]] | Conflict":
        """One ACTION_SCRIPT: write ``session`` and/or append ``message``, with the planned
        events, if the session is still ``read``; the keys then live for what status ``lives``
        gives. With ``session`` at NEW_SEQ or FRONT_SEQ (one Redis) it enters its status here,
        leaving ``left``. Returns the new status_seq (if any) and the events' part of the reply."""
        keys = self.keys.of_session(session_name)
        enters = ""  # the script's "1": at the back of the status's queue, "2": at its front
        if session is not None and session["status_seq"] in (NEW_SEQ, FRONT_SEQ):
            enters = "2" if session["status_seq"] == FRONT_SEQ else "1"
            entered = self.keys.status(session["status"])
            keys += [self.keys.status_seq, entered, self.keys.status(left) if left is not None else entered]
        else:
            keys += keys[:1] * 3  # unused, and on the session's slot
        section = planned.section if planned is not None else NO_EVENTS
        keys += section.keys
        args = [
            read if read is not None else "",
            rules.encode(session) if session is not None else "",
            rules.encode(message) if message is not None else "",
            self.bounds.transcript_messages,
            self.bounds.transcript_bytes,
            ms(self.bounds.ttl(lives)),
            enters,
            ms(self.bounds.ttl("bot_active")),
            session_name,
            *section.args,
        ]
        if planned is not None:
            assert self._events is not None
            await self._events.before(planned)
        if self._pipe is not None:
            reply = await self._pipe.run_script(ACTION, keys, args)
        else:
            reply = await self._action(keys=keys, args=args)
        if not int(reply[0]):
            if planned is not None:
                assert self._events is not None
                await self._events.abandon(planned)  # nothing written: no outbox to relay
            return Conflict(reply[1] or None)
        seq = as_text(reply[1])
        return (int(seq) if seq else None), [as_text(event_id) for event_id in reply[2:]]

    async def _retrying(self, session_name: str, attempt: Attempt[T], *, recent: bool = True) -> T:
        """Run ``attempt`` on the session until it commits, giving it the session as the
        failed commit found it when another writer won (no second read); then let the broker
        publish what the script could not (other slots of a cluster). With ``recent`` the first
        try starts from the session as this process last knew it, without a GET."""
        key = self.keys.session(session_name)

        async def read() -> bytes | str | None:
            raw = await (self._pipe.execute("GET", key) if self._pipe else self._redis.get(key))
            self._recent.put(session_name, raw)
            return cast(bytes | None, raw)

        async def attempts() -> Committed[T]:
            raw = self._recent.get(session_name) if recent else None
            remembered = raw is not None  # a guess: only a commit proves it was right
            if raw is None:
                raw = await read()
            for _ in range(MAX_ATTEMPTS):
                try:
                    outcome = await attempt(raw)
                except StoreError:
                    if not remembered:
                        raise
                    outcome = None  # refused on what this process remembered: ask Redis
                if outcome is None or (
                    remembered and not isinstance(outcome, Conflict) and not outcome.wrote
                ):
                    raw, remembered = await read(), False
                    continue
                if not isinstance(outcome, Conflict):
                    return outcome
                raw, remembered = outcome.current, False  # what the script found: Redis's word
                self._recent.put(session_name, raw)
            raise StoreUnavailable(f"session {session_name!r} is too contended; try again")

        try:
            committed = await self._call(attempts, piped=self._pipe is not None)
        except SessionNotFound:
            self._recent.put(session_name, None)
            raise
        self._recent.put(session_name, committed.stored)
        if committed.planned is not None:
            assert self._events is not None
            await self._events.finish(committed.planned, committed.events_reply)
        return committed.result

    async def upgrade(self) -> int:
        """Bring an earlier version's data up to this layout (redis_upgrade); returns how many
        sessions it touched. Safe at every start of every process: once done, it finds nothing."""

        async def rewrite(name: str, raw: bytes | str, session: Session) -> None:
            await self._commit(name, raw, session, session["status"], None)

        return await self._call(
            functools.partial(upgrade_indexes, self._redis, self.keys, self.bounds, self._get_all, rewrite)
        )

    async def adopt(self, records: list[tuple[Session, list[Message]]]) -> int:
        """Write sessions (with their transcripts) that Redis has no record of; sessions it
        already knows are left alone. Returns how many were written."""
        adopted = 0
        for session, messages in sorted(records, key=lambda r: r[0]["status_seq"]):
            adopted += await self._call(
                functools.partial(
                    adopt_one, self._indexes, self._adopt_script, self.keys, self.bounds, session, messages
                )
            )
        return adopted

    async def _call(self, operation: Callable[[], Awaitable[T]], *, piped: bool = False) -> T:
        """Run a Redis operation; an outage becomes StoreUnavailable (503) within the timeout,
        however many reconnect attempts redis-py would make. ``piped``: the operation's
        commands all go through the command pipe, which bounds each by the timeout itself
        (cheaper than a timeout per call)."""
        try:
            if piped:
                result = await operation()
            else:
                async with asyncio.timeout(self._timeout):
                    result = await operation()
        except (RedisError, TimeoutError) as exc:
            if self._down:
                logger.debug("session store still unavailable: %r", exc)
            else:
                self._down = True
                logger.warning("session store unavailable (answering 503): %r", exc)
            raise StoreUnavailable(str(exc) or "timed out") from exc
        if self._down:
            self._down = False
            logger.info("session store available again")
        return result


def _found(session_name: str, raw: bytes | str | None) -> Session:
    if raw is None:
        raise SessionNotFound(session_name)
    return _decode(raw)


def _decode(raw: bytes | str) -> Session:
    session: Session = rules.decode(raw)  # written by this store, in this shape
    return session
