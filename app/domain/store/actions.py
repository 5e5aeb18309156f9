"""The actions of docs/api.md as moves: every store applies an action through its ``change``,
with the pure rules of app.domain.store.rules, so each store writes only ``change``."""

from app.domain.store import rules
from app.domain.store.base import Action, Announce, SessionStore, Transition


class ActionsAsMoves(SessionStore):
    async def apply(
        self,
        session_name: str,
        action: Action,
        agent_id: str | None = None,
        reason: str | None = None,
        *,
        summary: str | None = None,
        announce: Announce | None = None,
        incarnation: str | None = None,
    ) -> Transition:
        return await self.change(
            session_name,
            lambda s: rules.apply(s, action, agent_id, reason, summary),
            announce=announce,
            incarnation=incarnation,
        )
