"""The plain request body check (schemas/plain.py, ``PlainBody``) runs before marshmallow to
save its cost on the bodies clients send every second (a chat, an agent's message); it must
answer exactly what the schema answers: the same result for what it accepts, and the schema's
own refusal for everything else. Generated bodies: valid ones, then each mutated where a check
could slip (missing, extra, mistyped and out-of-bounds fields)."""

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from handlers.chatbot import CHAT, CREATE_SESSION, ESCALATE
from handlers.common import AGENT_ACTION
from handlers.workbench import AGENT_MESSAGE
from schemas.plain import PlainBody

# The fast tier (make test-fast sets SWITCHBOARD_FUZZ_TIER=fast) runs a tenth.
EXAMPLES = 2000 // (10 if os.environ.get("SWITCHBOARD_FUZZ_TIER") == "fast" else 1)

BODIES = {
    "chat": CHAT,
    "escalate": ESCALATE,
    "create": CREATE_SESSION,
    "agent action": AGENT_ACTION[False],
    "agent action, token": AGENT_ACTION[True],
    "agent message": AGENT_MESSAGE[False],
    "agent message, token": AGENT_MESSAGE[True],
}
PLAIN = {"chat", "agent action", "agent action, token", "agent message", "agent message, token"}

names = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    st.sampled_from(["", "a" * 65, "abc\n", "a:b", "é", "a b"]),
)
texts = st.one_of(st.sampled_from(["", "hi", "c" * 4000, "c" * 4001, "你好", "\n"]), st.text(max_size=20))
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=False), st.just([]), st.just({})
)
keys = st.sampled_from(["session_name", "content", "agent_id", "reason", "extra", ""])
bodies = st.one_of(
    st.dictionaries(keys, st.one_of(names, texts, leaves), max_size=4),
    st.fixed_dictionaries({"session_name": names, "content": texts}),
    st.fixed_dictionaries({"agent_id": names, "content": texts}),
    st.fixed_dictionaries({"agent_id": names}),
    leaves,
)


def answer(load: Any, body: Any) -> tuple[str, Any]:
    try:
        return "ok", load(body)
    except ValidationError as exc:
        return "refused", exc.messages


@pytest.mark.parametrize("which", sorted(BODIES))
@settings(max_examples=EXAMPLES, deadline=None)
@given(body=bodies)
def test_the_plain_check_answers_what_the_schema_answers(which: str, body: Any) -> None:
    plain = BODIES[which]
    schema: Schema = plain.schema
    assert answer(plain.load, body) == answer(schema.load, body)


def test_the_bodies_clients_send_most_are_checked_plainly() -> None:
    """Else the check saves nothing: the chat's and the agent's bodies take the plain path."""
    assert {name for name, plain in BODIES.items() if plain.plain} == PLAIN
    chat = {"session_name": "s-1", "content": "hello"}
    assert CHAT.load(chat) == chat and CHAT.load(chat) is not chat
    refused = PlainBody(type(CHAT.schema)())
    with pytest.raises(ValidationError) as caught:
        refused.load({"session_name": "s 1", "content": "hello"})
    assert "session_name" in caught.value.messages
