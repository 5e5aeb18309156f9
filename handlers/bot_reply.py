"""The bot's turn in a conversation (POST /chatbot/api/chat and /chat/stream): ask the bot,
let each piece of a streamed answer through the store's fence, store the answer, and hand the
conversation to a person when the bot asks to or fails (docs/bots.md).

The race: a reply begins at the session's status_seq. Every piece passes the store's fence
(``bot_may_speak``) before it is written to the customer, holding a lease while it is; a change
that moves a bot_active session waits for those leases before it answers; the stored reply is
refused if the session moved since. So from the moment a takeover answers 200, nothing of the
bot's reply is written, stored or published, on any process: the reply is cancelled (its
stream ends with ``cancelled``) and its partial text is not stored.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from aiohttp import web

from app.domain.bot import HANDOFF_REASON, BotFailure, Handoff
from app.domain.store import Message, Session, TransitionRefused
from app.keys import BOT_METRICS, METRICS, RESPONDER, SETTINGS, SOURCE
from handlers.access import start_wait
from handlers.announce import message_events, transition_events
from handlers.common import backends
from handlers.reply_stream import ReplyStream
from realtime.channels import session_channel
from realtime.events import envelope
from schemas.fields import MAX_CONTENT, MAX_SUMMARY

logger = logging.getLogger(__name__)

# What the bot says when it would hand the conversation over but --max-waiting customers wait.
QUEUE_FULL_NOTICE = (
    "All our agents are busy right now, so I'll stay with you for the moment. "
    "Please ask for a person again in a few minutes."
)
# ... and when this client address has started or escalated --start-rate conversations lately.
START_RATE_NOTICE = (
    "I can't reach a person for you just yet: too many requests came from your network. "
    "Please ask again in a minute."
)
# When the bot failed (docs/bots.md, "When the bot fails"), and when it handed over in silence.
BOT_UNAVAILABLE = "bot_unavailable"
SORRY = "Sorry, I can't answer right now."
PASSING_ON = "I'm passing you to a person, who will reply here."
HANDOFF_LINE = "I'm connecting you with a human agent. Please stay here."

# A bot's reply is cut here, leaving room for a notice within a message's bound.
MAX_REPLY = MAX_CONTENT - 400
# A typing event goes out once the bot has thought this long (none for an instant answer),
# then again at this interval until the reply is stored or cancelled.
TYPING_AFTER = 0.3
TYPING_EVERY = 4.0
# /api/chat (nothing written while the bot answers): how often the answer checks that the
# conversation is still the bot's, to stop asking the bot for a reply nobody will see.
FENCE_EVERY = 0.25


async def queue_full(request: web.Request) -> bool:
    """Whether --max-waiting conversations wait for an agent already (counted as a refusal).
    Checked before the escalation, not with it: escalations in flight together may pass the
    limit by their number."""
    limit = request.config_dict[SETTINGS].max_waiting
    if await backends(request).store.count("waiting_agent") < limit:
        return False
    request.config_dict[METRICS].escalations_refused["queue_full"] += 1
    return True


class BotTurn:
    """One answer of the bot to the customer's ``message``, in the session's current turn."""

    def __init__(
        self, request: web.Request, session: Session, message: Message, stream: ReplyStream | None
    ) -> None:
        self._request = request
        self._session = session
        self._message = message
        self._stream = stream
        self._name = session["session_name"]
        self._turn = session["status_seq"]
        self._token = secrets.token_hex(8)
        self._store = backends(request).store
        self._checked = time.monotonic()
        self.event = "done"  # the last frame of a streamed answer: done, or cancelled

    async def run(self) -> dict[str, Any]:
        texts: list[str] = []
        handoff: Handoff | None = None
        failure: BotFailure | None = None
        typing = asyncio.create_task(self._typing())
        try:
            async with contextlib.aclosing(
                self._request.config_dict[RESPONDER].stream(self._session, self._message)
            ) as parts:
                room = MAX_REPLY
                async for part in parts:
                    if isinstance(part, Handoff):
                        handoff = part
                    elif isinstance(part, str) and part and room:
                        # Past MAX_REPLY the text is dropped, and a hand-off still read.
                        piece = part[:room]
                        if not await self._let_through(piece):
                            return await self._cancelled()
                        texts.append(piece)
                        room -= len(piece)
        except BotFailure as exc:
            failure = exc
        finally:
            typing.cancel()
        return await self._finish("".join(texts), handoff, failure)

    async def _finish(self, text: str, handoff: Handoff | None, failure: BotFailure | None) -> dict[str, Any]:
        escalate = failure is not None or handoff is not None
        notice = ""
        if failure is not None:
            notice = f"{SORRY} {PASSING_ON}"
        elif handoff is not None and not text:
            notice = HANDOFF_LINE
        refusal = await self._escalation_refused() if escalate else None
        if refusal is not None:
            # The bot says so, in the same reply, and keeps the conversation.
            notice = f"{SORRY}\n\n{refusal}" if failure is not None else refusal
            escalate = False
        if notice:
            piece = f"{chr(10) * 2 if text else ''}{notice}"
            if not await self._let_through(piece):
                return await self._cancelled()
            text += piece
        try:
            session, reply = await self._store.add_message(
                self._name, "bot", text, announce=message_events(self._request), status_seq=self._turn
            )
        except TransitionRefused:
            return await self._cancelled()  # the conversation changed hands meanwhile
        if escalate:
            if failure is not None:
                # The agent reads what the bot could not answer, and needs not ask again.
                summary = f"The bot could not answer ({failure.kind}). The customer wrote: {self._message['content']}"
                session = await self._escalates(session, BOT_UNAVAILABLE, summary, BOT_UNAVAILABLE)
            else:
                assert handoff is not None
                session = await self._escalates(
                    session, handoff.reason or HANDOFF_REASON, handoff.summary, "bot"
                )
        return {"session": session, "message": self._message, "reply": reply}

    async def _let_through(self, piece: str) -> bool:
        """Write a piece to the streamed answer if the conversation is still the bot's (under
        a lease, so that a takeover answers after it); False if it is not."""
        store = self._store
        if self._stream is None:
            if time.monotonic() - self._checked < FENCE_EVERY:
                return True
            self._checked = time.monotonic()
            allowed = await store.bot_may_speak(self._name, self._turn, self._token)
            if allowed:
                await store.bot_has_spoken(self._name, self._token)
            return allowed
        if not await store.bot_may_speak(self._name, self._turn, self._token):
            return False
        try:
            await self._stream.chunk(piece)
        finally:
            await store.bot_has_spoken(self._name, self._token)
        return True

    async def _cancelled(self) -> dict[str, Any]:
        """The conversation left the bot while it answered: nothing of the reply is stored."""
        self._request.config_dict[BOT_METRICS].cancelled.inc()
        logger.info("session %s: the bot's reply was cancelled, the conversation moved", self._name)
        self.event = "cancelled"
        session = await self._store.get(self._name)
        return {"session": session, "message": self._message, "reply": None}

    async def _typing(self) -> None:
        """``typing`` on the session's channel while the bot thinks (ephemeral, best effort)."""
        broker = backends(self._request).broker
        channel = session_channel(self._name)
        source = self._request.app[SOURCE]
        await asyncio.sleep(TYPING_AFTER)
        while True:
            await broker.signal(
                channel, envelope("typing", {"session_name": self._name, "who": "bot"}, source)
            )
            await asyncio.sleep(TYPING_EVERY)

    async def _escalation_refused(self) -> str | None:
        """What the bot tells the customer when it would hand over but may not: --max-waiting
        customers wait already, or this client address is past --start-rate (both counted as
        refusals). The conversation then stays with the bot, and the chat answers 200."""
        request = self._request
        if await queue_full(request):
            return QUEUE_FULL_NOTICE
        if start_wait(request, "escalation") > 0:
            logger.info(
                "session %s: the bot's escalation refused, its client is over --start-rate", self._name
            )
            return START_RATE_NOTICE
        return None

    async def _escalates(self, session: Session, reason: str, summary: str | None, why: str) -> Session:
        """The bot hands the conversation to a person (it has said so); the session after it."""
        try:
            transition = await self._store.apply(
                self._name,
                "escalate",
                reason=reason,
                # A bot's words are not a client's request: a summary past the bound is cut, not
                # refused (the escalation must happen).
                summary=summary[:MAX_SUMMARY] if summary is not None else None,
                announce=transition_events(self._request, "escalate"),
            )
        except TransitionRefused:
            return session  # taken over meanwhile: nothing to ask for
        if transition.changed:
            self._request.config_dict[BOT_METRICS].handoffs.labels(why).inc()
        return transition.session
