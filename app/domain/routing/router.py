"""The router (docs/routing.md): each round it ends expired offers, sends back to the bot the
conversations that waited past --wait-timeout, closes those whose customers are gone past
--customer-idle, and in auto assignment offers waiting conversations to agents. It also hands
back to the queue what an agent who went offline held.

Every process that serves the workbench runs rounds; nothing depends on only one doing so.
Each step is one of app.domain.routing.moves, which checks the state it starts from inside the
store's atomic step, and capacity is counted by the registry's own atomic step before an offer
is made: two routers never offer one conversation twice nor an agent past its capacity, and a
timer acted on by two processes changes the conversation once (the other finds it moved)."""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.domain import announcements
from app.domain.agents import AgentRegistry, AtCapacity
from app.domain.routing import moves
from app.domain.routing.customers import CustomerPresence
from app.domain.routing.metrics import RoutingMetrics
from app.domain.store import SessionStore
from app.domain.store.base import (
    MAX_PAGE,
    Move,
    Outgoing,
    Session,
    SessionNotFound,
    Transition,
    TransitionRefused,
)
from app.domain.store.rules import new_message

logger = logging.getLogger(__name__)

# The head of the queue a round looks at: offers and wait timeouts reach a conversation once
# it is among the first HEAD_PAGES * MAX_PAGE (1,000: the default --max-waiting, all of it).
HEAD_PAGES = 1
# Conversations whose customers are gone, closed per round at most.
IDLE_BATCH = 100

WAIT_TIMEOUT_NOTICE = (
    "Sorry, no one is free to take your conversation right now. I'm back to help; ask for a "
    "person again whenever you like."
)
TAKE_MESSAGE_NOTICE = (
    "Everyone is busy right now. Leave your message here: a person will answer it as soon as "
    "one is free, and you'll find the answer here even if you leave."
)
AGENT_OFFLINE_NOTICE = (
    "Your agent was disconnected. You're back at the front of the queue; the next agent will reply here."
)
TRANSFER_NOTICE = "You're being passed to another agent, who will reply here."
IDLE_NOTICE = "This conversation was closed because you were away."


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    auto: bool = False
    offer_timeout: float = 30.0
    wait_timeout: float = 300.0  # 0: never
    # What a wait timeout does: "bot" (back to the bot) or "message" (take one for later).
    wait_timeout_action: str = "bot"
    customer_idle: float = 600.0  # 0: never
    webhooks: bool = False


@dataclass(slots=True)
class Router:
    store: SessionStore
    agents: AgentRegistry
    customers: CustomerPresence
    policy: RoutingPolicy
    metrics: RoutingMetrics

    async def round(self, now: float) -> None:
        waiting = await self._waiting()
        self.metrics.queue_length.set(len(waiting))
        await self._expire_offers(waiting, now)
        if self.policy.wait_timeout:
            await self._time_out(waiting, now)
        if self.policy.customer_idle:
            await self._close_idle(now)
        if self.policy.auto:
            await self._offer(waiting, now)

    async def _waiting(self) -> list[Session]:
        waiting: list[Session] = []
        cursor = None
        for _ in range(HEAD_PAGES):
            page = await self.store.list_sessions("waiting_agent", limit=MAX_PAGE, after=cursor)
            waiting.extend(page.items)
            if (cursor := page.next_cursor) is None:
                break
        return waiting

    async def change(
        self,
        session_name: str,
        move: Move,
        *,
        source: str = "system",
        notice: str | None = None,
        ended: str = "withdrawn",
        strict: bool = False,
        also: Sequence[Outgoing] = (),
    ) -> Transition | None:
        """Make a routing move with its events (and a notice to the customer); None if the
        conversation moved on or is gone (another process acted, or somebody else did), or
        with ``strict`` (an agent's request) TransitionRefused or SessionNotFound. Gives back
        what the move took from agents: a holder's or an offered agent's count. ``also``: more
        events to publish with the change, if it changes anything (a supervisor's audit)."""
        said = new_message("bot", notice, None) if notice is not None else None
        try:
            done = await self.store.change(
                session_name,
                move,
                say=said,
                announce=lambda t: [
                    *announcements.of_route(
                        t, source=source, said=said, ended=ended, webhooks=self.policy.webhooks
                    ),
                    *(also if t.changed else ()),
                ],
            )
        except (TransitionRefused, SessionNotFound) as exc:
            if strict:
                raise
            logger.debug("routing move on %s not made: %s", session_name, exc)
            return None
        if done.changed:
            await self._give_back(done)
        return done

    async def uncount(self, agent_id: str, session_name: str) -> None:
        """Give back the count this caller took (``reserve`` said it counted it) for a change
        that did not commit, unless the conversation is counted against the agent anyway
        (held by it, or offered to it, by a change made meanwhile)."""
        try:
            session: Session | None = await self.store.get(session_name)
        except SessionNotFound:
            session = None
        if session is None or agent_id not in moves.counted_against(session):
            await self.agents.release(agent_id, session_name)

    async def _give_back(self, done: Transition) -> None:
        before, after = done.before, done.session
        assert before is not None
        for agent_id in moves.counted_against(before) - moves.counted_against(after):
            await self.agents.release(agent_id, after["session_name"])

    async def _expire_offers(self, waiting: Sequence[Session], now: float) -> None:
        for session in waiting:
            offer = session.get("offer")
            if offer is not None and offer["expires_at"] <= now:
                move = moves.withdraw(offer["agent_id"], now, offered_at=offer["offered_at"])
                done = await self.change(session["session_name"], move, ended="expired")
                if done is not None and done.changed:
                    self.metrics.offers.labels("expired").inc()
                    logger.info("offer of %s to agent %s expired", session["session_name"], offer["agent_id"])

    async def _time_out(self, waiting: Sequence[Session], now: float) -> None:
        to_bot = self.policy.wait_timeout_action == "bot"
        for session in waiting:
            since = session.get("waiting_since") or session["updated_at"]
            if since > now - self.policy.wait_timeout or session.get("message_taken"):
                continue
            name, seq = session["session_name"], session["status_seq"]
            if to_bot:
                done = await self.change(name, moves.time_out(seq), notice=WAIT_TIMEOUT_NOTICE)
            else:
                done = await self.change(name, moves.take_message(seq), notice=TAKE_MESSAGE_NOTICE)
            if done is not None and done.changed:
                self.metrics.timeouts.labels("wait").inc()
                logger.info(
                    "%s waited %.0f s: %s",
                    name,
                    now - since,
                    "back to the bot" if to_bot else "message taken",
                )

    async def _close_idle(self, now: float) -> None:
        names = await self.customers.away_since(now - self.policy.customer_idle, IDLE_BATCH)
        if not names:
            return
        sessions = await self.store.get_many(names)
        for name in names:
            session = sessions.get(name)
            if session is not None and moves.close_idle(session) is not None:
                done = await self.change(name, moves.close_idle, notice=IDLE_NOTICE)
                if done is not None and done.changed:
                    self.metrics.timeouts.labels("customer_idle").inc()
                    logger.info(
                        "%s closed: its customer was away for %.0f s", name, self.policy.customer_idle
                    )
        await self.customers.forget(names)

    async def _offer(self, waiting: Sequence[Session], now: float) -> None:
        room: dict[str, int] = {}
        for agent, active in await self.agents.all():
            free = self.agents.capacity_of(agent) - active
            if agent["status"] == "online" and free > 0:
                room[agent["agent_id"]] = free
        if not room:
            return
        assigned = await self.agents.last_assigned()
        for session in waiting:
            if not room:
                return
            if session.get("offer") is not None:
                continue
            declined = session.get("declined") or {}
            choices = [a for a in room if declined.get(a, -math.inf) <= now - self.policy.offer_timeout]
            if not choices:
                continue
            # The most free capacity; ties: the one idle longest, then by id (deterministic).
            agent_id = min(choices, key=lambda a: (-room[a], assigned.get(a, 0.0), a))
            name = session["session_name"]
            try:
                counted = await self.agents.reserve(agent_id, name)
            except AtCapacity:
                del room[agent_id]
                continue
            if not counted:
                continue  # another router is offering it to this agent now (or it holds it)
            move = moves.offer(agent_id, session["status_seq"], now, self.policy.offer_timeout)
            done = await self.change(name, move)
            if done is None or not done.changed:
                await self.uncount(agent_id, name)
                continue
            self.metrics.offers.labels("made").inc()
            assigned[agent_id] = now
            room[agent_id] -= 1
            if not room[agent_id]:
                del room[agent_id]

    async def agent_gone(self, agent_id: str, now: float) -> int:
        """An agent went offline: what it held goes back to the front of the queue (its
        customers told), its offers are withdrawn. Returns how many conversations moved."""
        names = await self.agents.held(agent_id)
        sessions = await self.store.get_many(names)
        requeued = 0
        for name in names:
            session = sessions.get(name)
            if session is None:
                continue
            if session["status"] == "agent_active" and session["agent_id"] == agent_id:
                move = moves.requeue(agent_id, "agent_offline", now)
                done = await self.change(name, move, notice=AGENT_OFFLINE_NOTICE)
                if done is not None and done.changed:
                    requeued += 1
                    self.metrics.requeued.labels("agent_offline").inc()
            elif (offer := session.get("offer")) is not None and offer["agent_id"] == agent_id:
                await self.change(name, moves.withdraw(agent_id, now, offered_at=offer["offered_at"]))
        if requeued:
            logger.info(
                "agent %s offline: %d conversations back to the front of the queue", agent_id, requeued
            )
        return requeued
