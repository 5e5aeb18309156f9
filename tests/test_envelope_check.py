"""The plain envelope check (schemas/envelope.py, ``_plainly_valid``) runs before the schemas
to save their cost on the events the server publishes; it must never accept an event the
schemas refuse, and it must accept what the server actually publishes (or it saves nothing).
Generated events: valid ones of every type, then each mutated where a check could slip."""

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.announcements import of_message, of_transition
from app.domain.store import Session, Transition
from app.domain.store.rules import new_message, new_session
from schemas.envelope import _plainly_valid, schema_errors, validate_event

# The fast tier (make test-fast sets SWITCHBOARD_FUZZ_TIER=fast, as for tests/test_fuzz.py)
# runs a tenth; the whole suite runs them all.
EXAMPLES = 3000 // (10 if os.environ.get("SWITCHBOARD_FUZZ_TIER") == "fast" else 1)

names = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    st.sampled_from(["", "a" * 65, "abc\n", "a:b", "a*", "é"]),
)
statuses = st.sampled_from(["bot_active", "waiting_agent", "agent_active", "closed", "open", ""])
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.just([]),
    st.just({}),
)
contents = st.one_of(
    st.sampled_from(["", "hi", "c" * 4000, "c" * 4001, "你好"]),
    st.text(max_size=20),
)
messages = st.fixed_dictionaries(
    {
        "id": st.one_of(st.text(max_size=16), leaves),
        "role": st.one_of(st.sampled_from(["customer", "bot", "agent", "admin"]), leaves),
        "content": st.one_of(contents, leaves),
        "agent_id": st.one_of(names, st.none(), leaves),
        "created_at": st.one_of(st.integers(-1, 2**40), st.booleans(), leaves),
    }
)
payloads = st.one_of(
    st.fixed_dictionaries({"session_name": st.one_of(names, leaves), "message": st.one_of(messages, leaves)}),
    st.fixed_dictionaries(
        {
            "session_name": st.one_of(names, leaves),
            "status": st.one_of(statuses, leaves),
            "previous_status": st.one_of(statuses, leaves),
            "agent_id": st.one_of(names, st.none(), leaves),
        }
    ),
    st.fixed_dictionaries(
        {
            "session_name": st.one_of(names, leaves),
            "status": st.one_of(statuses, leaves),
            "reason": st.one_of(st.text(max_size=8), st.none(), leaves),
        }
    ),
    st.fixed_dictionaries({"session_name": st.one_of(names, leaves), "agent_id": st.one_of(names, leaves)}),
    st.just({}),
)


@st.composite
def events(draw: st.DrawFn) -> Any:
    event: dict[Any, Any] = {
        "type": draw(
            st.one_of(
                st.sampled_from(
                    [
                        "new_message",
                        "status_change",
                        "transfer_request",
                        "agent_joined",
                        "agent_left",
                        "heartbeat",
                        "connected",
                        "typing",
                    ]
                ),
                leaves,
            )
        ),
        "payload": draw(st.one_of(payloads, leaves)),
        "timestamp": draw(st.one_of(st.integers(-1, 2**40), st.booleans(), leaves)),
        "source": draw(st.one_of(st.sampled_from(["ai_chatbot", "agent_workbench", "system", "x"]), leaves)),
    }
    extra = draw(st.sampled_from([None, "extra", "payload_extra", "drop"]))
    if extra == "extra":
        event["id"] = "1-0"
    elif extra == "payload_extra" and isinstance(event["payload"], dict):
        event["payload"] = {**event["payload"], "more": 1}
    elif extra == "drop":
        event.pop(draw(st.sampled_from(sorted(event))))
    return event


@settings(max_examples=EXAMPLES, deadline=None)
@given(events())
def test_the_plain_check_accepts_nothing_the_schemas_refuse(event: Any) -> None:
    if _plainly_valid(event):
        assert schema_errors(event) == {}, event
    assert (validate_event(event) == {}) == (schema_errors(event) == {})


def test_what_the_server_publishes_passes_the_plain_check() -> None:
    """Every event of announcements (both sides, every action) takes the fast way."""
    session = new_session("s1", 1)
    held: Session = {**session, "status": "agent_active", "agent_id": "a1"}
    waiting: Session = {**session, "status": "waiting_agent", "escalation_reason": "help"}
    closed: Session = {**session, "status": "closed"}
    published = [
        *of_message(session, new_message("customer", "hello", None), source="ai_chatbot"),
        *of_message(session, new_message("bot", "hi", None), source="ai_chatbot"),
        *of_message(held, new_message("customer", "hello", None), source="ai_chatbot", to_holder=True),
        *of_message(held, new_message("agent", "hi", "a1"), source="agent_workbench"),
        *of_transition(
            Transition(waiting, "bot_active", True),
            action="escalate",
            source="ai_chatbot",
        ),
        *of_transition(
            Transition(held, "waiting_agent", True),
            action="takeover",
            source="agent_workbench",
            agent_id="a1",
        ),
        *of_transition(
            Transition(session, "agent_active", True),
            action="release",
            source="agent_workbench",
            agent_id="a1",
        ),
        *of_transition(Transition(closed, "bot_active", True), action="close", source="system"),
    ]
    assert len(published) >= 12
    for _channel, event in published:
        assert _plainly_valid(event), event
