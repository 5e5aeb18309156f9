"""The hand-off summary (issue 14): what the bot, or whoever escalates, tells the agent so that
the customer need not repeat it. It rides on the escalation into the session
(``handoff_summary``) and the agents' ``transfer_request``, stays through the takeover, and is
cleared when the conversation goes back to the bot. Memory and Redis backends alike."""

from collections.abc import AsyncIterator

from app.domain.bot import Handoff, Responder
from app.domain.store import Message, Session
from app.factory import create_app
from app.process.settings import Settings
from schemas.fields import MAX_SUMMARY
from tests.support.api import CHATBOT, WORKBENCH, act, agent_events, call, create
from tests.support.app_server import ServeApp
from tests.support.sse import SSEEvent, SSEStream, open_stream

SUMMARY = "Charged twice for order 1234 on 2 December; wants the second charge refunded."


class SummarizingBot(Responder):
    """Hands every conversation over, with a reason and a summary (the customer's message, as
    long as it is: a bot may say more than the bound)."""

    async def stream(self, session: Session, message: Message) -> AsyncIterator[str | Handoff]:
        yield "Let me find someone who can look at your account. "
        yield Handoff("billing", SUMMARY if message["content"] == "charged twice" else message["content"] * 2)


async def transfer_request(stream: SSEStream) -> SSEEvent:
    """The next transfer_request on an agent's stream (a bounded number of events read)."""
    for _ in range(10):
        (event,) = await stream.take(1, timeout=5.0)
        if event.data["type"] == "transfer_request":
            return event
    raise AssertionError("no transfer_request among the first 10 events")


async def test_the_bots_summary_reaches_the_agent_and_goes_with_the_release(
    serve_app: ServeApp, settings: Settings
) -> None:
    client = await serve_app(create_app(settings, responder=SummarizingBot()))
    await create(client, "sum1")
    async with open_stream(client, agent_events("a1")) as (on_agents, _):
        answer = await call(
            client, "POST", f"{CHATBOT}/chat", {"session_name": "sum1", "content": "charged twice"}
        )
        assert answer["session"]["status"] == "waiting_agent"
        assert answer["session"]["handoff_summary"] == SUMMARY
        told = await transfer_request(on_agents)
        assert told.data["payload"] == {
            "session_name": "sum1",
            "status": "waiting_agent",
            "reason": "billing",
            "summary": SUMMARY,
        }
    taken = await act(client, "sum1", "takeover", "a1")
    assert taken["handoff_summary"] == SUMMARY, "the agent who takes over still has it"
    released = await act(client, "sum1", "release", "a1")
    assert released["status"] == "bot_active" and released["handoff_summary"] is None


async def test_a_bots_summary_past_the_bound_is_cut_not_refused(
    serve_app: ServeApp, settings: Settings
) -> None:
    client = await serve_app(create_app(settings, responder=SummarizingBot()))
    await create(client, "sum3")
    long = "y" * 2000  # the bot says it twice: 4,000 characters
    answer = await call(client, "POST", f"{CHATBOT}/chat", {"session_name": "sum3", "content": long})
    assert answer["session"]["status"] == "waiting_agent"
    assert answer["session"]["handoff_summary"] == "y" * MAX_SUMMARY


async def test_a_manual_escalation_carries_a_summary_within_its_bound(
    serve_app: ServeApp, settings: Settings
) -> None:
    client = await serve_app(create_app(settings))
    await create(client, "sum2")
    escalate = f"{CHATBOT}/manual/escalate"
    refused = await call(
        client, "POST", escalate, {"session_name": "sum2", "summary": "x" * (MAX_SUMMARY + 1)}, status=400
    )
    assert refused["error"]["code"] == "validation_error" and "summary" in refused["error"]["fields"]
    unchanged = await call(client, "GET", f"{CHATBOT}/sessions/sum2")
    assert unchanged["status"] == "bot_active" and unchanged["handoff_summary"] is None
    session = await call(
        client, "POST", escalate, {"session_name": "sum2", "reason": "billing", "summary": SUMMARY}
    )
    assert (session["status"], session["handoff_summary"]) == ("waiting_agent", SUMMARY)
    listed = await call(client, "GET", f"{WORKBENCH}/sessions?status=waiting_agent")
    assert [s["handoff_summary"] for s in listed["sessions"] if s["session_name"] == "sum2"] == [SUMMARY]
