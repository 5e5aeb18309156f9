"""Private notes (docs/api.md, "Private notes"): any agent writes one on a conversation; it is
in the workbench's transcript and on the agents' and supervisors' streams, and on nothing a
customer reads: not the customer's stream, not the chatbot side's transcript, not a resume, not
the bot's context. The last test drives 1,000 mixed actions through a split deployment (a
chatbot process and a workbench process on one Redis), every feature of the live chat among
them, and finds no note nor whisper anywhere a customer looks."""

import asyncio
import random
import secrets
from typing import Any

import aiohttp

from app.keys import BACKENDS
from app.process.settings import Settings
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    Http,
    act,
    agent_events,
    call_json,
    chat,
    create,
    escalate,
    get_session,
    send,
    session_events,
    transcript,
)
from tests.support.app_server import MakeClient
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import SSEEvent, SSEStream, open_stream

QUIET = 0.3
SUPERVISOR = f"{WORKBENCH}/events"


async def note(http: Http, name: str, agent_id: str, content: str, *, base: str = "") -> dict[str, Any]:
    url = f"{base}{WORKBENCH}/sessions/{name}/notes"
    return await call_json(http, "POST", url, {"agent_id": agent_id, "content": content})


async def heard(stream: SSEStream) -> list[SSEEvent]:
    """Every event until the stream is quiet for QUIET (typing and heartbeats too)."""
    events: list[SSEEvent] = []
    for _ in range(10_000):
        try:
            events.append(await stream.next(timeout=QUIET))
        except TimeoutError:
            return events
    raise AssertionError("never quiet")


async def test_a_note_reaches_agents_only(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    await create(client, "n1")
    await escalate(client, "n1")
    await act(client, "n1", "takeover", "alice")
    async with (
        open_stream(client, session_events("n1")) as (customer, _),
        open_stream(client, session_events("n1", "workbench")) as (agent_view, connected),
        open_stream(client, SUPERVISOR) as (supervisor, _),
    ):
        assert connected.payload["channels"] == ["sse:session:n1"]
        added = await note(client, "n1", "bob", "reseller: offer the partner discount")  # any agent
        written = added["message"]
        assert written["role"] == "note" and written["agent_id"] == "bob", added
        for stream in (agent_view, supervisor):
            event = await stream.next_of("note", timeout=5.0)
            assert event.payload == {"session_name": "n1", "message": written}, event
            assert event.data["source"] == "agent_workbench"
        assert not [e for e in await heard(customer) if "partner discount" in str(e.data)]
    assert written in await transcript(client, "n1", "workbench")
    assert [m for m in await transcript(client, "n1", "chatbot") if m["role"] == "note"] == []
    # Resumed from the start: the agent's view holds it, the customer's does not.
    since_start = {"Last-Event-ID": "0-0"}
    async with open_stream(client, session_events("n1"), headers=since_start) as (customer, _):
        assert not [e for e in await heard(customer) if e.type == "note" or "partner" in str(e.data)]
    async with open_stream(client, session_events("n1", "workbench"), headers=since_start) as (agent_view, _):
        assert [e.payload["message"] for e in await heard(agent_view) if e.type == "note"] == [written]


async def test_notes_stay_out_of_the_bot_and_its_cursors(make_client: MakeClient, settings: Settings) -> None:
    """The bot's context is read without notes, and a customer's page cursor never names one."""
    client = await make_client(settings)
    await chat(client, "n2", "hello")
    await note(client, "n2", "alice", "secret one")
    await chat(client, "n2", "how are you")
    await note(client, "n2", "alice", "secret two")
    store = client.app[BACKENDS].store
    assert [m["role"] for m in (await store.messages("n2")).items] == ["customer", "bot", "customer", "bot"]
    page = await call_json(client, "GET", f"{CHATBOT}/sessions/n2/messages?limit=2")
    assert [m["role"] for m in page["messages"]] == ["customer", "bot"]
    rest = await call_json(
        client, "GET", f"{CHATBOT}/sessions/n2/messages?limit=2&cursor={page['next_cursor']}"
    )
    assert [m["role"] for m in rest["messages"]] == ["customer", "bot"] and rest["next_cursor"] is None
    refused = await send(
        client, "POST", f"{WORKBENCH}/sessions/n2/notes", {"agent_id": "alice", "content": ""}
    )
    assert refused.status == 400, refused


# The mixed actions of the scripted run, by weight: (weight, method, side, path, body); "{n}"
# is the session, "{secret}" a fresh marker, "{up_to}" the newest message a customer can see.
MIXED: list[tuple[float, str, str, str, dict[str, Any]]] = [
    (30, "POST", "workbench", "/sessions/{n}/notes", {"agent_id": "bob", "content": "NOTE-{secret}"}),
    (
        8,
        "POST",
        "workbench",
        "/sessions/{n}/whisper",
        {"supervisor_id": "sue", "content": "WHISPER-{secret}"},
    ),
    (18, "POST", "chatbot", "/chat", {"session_name": "{n}", "content": "hi"}),
    (7, "POST", "chatbot", "/manual/escalate", {"session_name": "{n}"}),
    (7, "POST", "workbench", "/sessions/{n}/takeover", {"agent_id": "alice"}),
    (7, "POST", "workbench", "/sessions/{n}/messages", {"agent_id": "alice", "content": "agent here"}),
    (4, "POST", "workbench", "/sessions/{n}/release", {"agent_id": "alice"}),
    (3, "POST", "workbench", "/sessions/{n}/read", {"agent_id": "alice", "up_to": "{up_to}"}),
    (3, "POST", "chatbot", "/sessions/{n}/read", {"up_to": "{up_to}"}),
    (3, "POST", "chatbot", "/sessions/{n}/typing", {}),
    (3, "POST", "workbench", "/sessions/{n}/typing", {"agent_id": "alice"}),
    (2, "POST", "workbench", "/sessions/{n}/barge", {"supervisor_id": "sue"}),
    (2, "POST", "workbench", "/sessions/{n}/reassign", {"supervisor_id": "sue", "to_agent_id": "alice"}),
    (2, "POST", "workbench", "/sessions/{n}/close", {"agent_id": "alice"}),
    (1, "POST", "chatbot", "/sessions/{n}/rating", {"score": 4}),
]


def filled(value: Any, fill: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: filled(item, fill) for key, item in value.items()}
    return value.format(**fill) if isinstance(value, str) else value


async def test_a_thousand_actions_no_note_reaches_a_customer(
    server_process: StartServer, redis_url: str
) -> None:
    """1,000 actions of every kind (notes, whispers, chats, hand-offs, reads, typing, barges,
    closes, ratings) through a split deployment; then everything a customer can read holds no
    note and no whisper, and the agents' side holds every note."""
    chatbot = server_process("--chatbot", "--redis-url", redis_url, "--rate-limit", "1000", env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, "--rate-limit", "1000", env=REDIS_ON)
    bases = {"chatbot": chatbot.url + CHATBOT, "workbench": workbench.url + WORKBENCH}
    rng = random.Random(16)
    names = [f"mix-{n}" for n in range(8)]
    written: list[str] = []
    succeeded: set[str] = set()
    async with aiohttp.ClientSession() as http:
        for name in names:
            await create(http, name, base=chatbot.url)
        await call_json(
            http, "POST", f"{bases['workbench']}/agents/alice/status", {"status": "online", "capacity": 8}
        )
        async with (
            open_stream(http, chatbot.url + session_events(names[0])) as (customer, _),
            open_stream(http, workbench.url + session_events(names[0], "workbench")) as (agent_view, _),
            open_stream(http, workbench.url + agent_events("alice")) as (alice, _),
        ):
            for _ in range(1000):
                name = rng.choice(names)
                _, method, side, path, body = rng.choices(MIXED, weights=[m[0] for m in MIXED])[0]
                fill = {"n": name, "secret": secrets.token_hex(6), "up_to": "0" * 16}
                if "{up_to}" in str(body):
                    visible = await transcript(http, name, "chatbot", base=chatbot.url)
                    fill["up_to"] = visible[-1]["id"] if visible else fill["up_to"]
                reply = await send(http, method, bases[side] + filled(path, fill), filled(body, fill))
                assert reply.status < 500, reply.body
                if reply.status == 200:
                    succeeded.add(f"{side}{path}")
                if reply.status == 200 and "{secret}" in str(body):
                    written.append(filled(body, fill)["content"])
            customer_heard, agent_heard, alice_heard = await asyncio.gather(
                heard(customer), heard(agent_view), heard(alice)
            )
        notes = [w for w in written if w.startswith("NOTE-")]
        assert len(notes) > 250 and any(w.startswith("WHISPER-") for w in written), len(notes)
        # Each kind of action was done at least once (others refused as the state machine says).
        assert succeeded == {f"{side}{path}" for _, _, side, path, _ in MIXED}, succeeded
        # Everything a customer reads, as text: its live stream, every transcript and every
        # stream resumed from the start, on the chatbot side.
        seen = [str(e.data) for e in customer_heard]
        for name in names:
            seen.append(str(await transcript(http, name, "chatbot", base=chatbot.url)))
            seen.append(str(await get_session(http, name, base=chatbot.url)))
            async with open_stream(
                http, chatbot.url + session_events(name), headers={"Last-Event-ID": "0-0"}
            ) as (resumed, _):
                seen.extend(str(e.data) for e in await heard(resumed))
        text = "\n".join(seen)
        assert "NOTE-" not in text and "WHISPER-" not in text
        # ...while the agents have every note, and alice the whispers sent while she held.
        kept = "\n".join(
            [str(await transcript(http, name, "workbench", base=workbench.url)) for name in names]
        )
        assert all(secret in kept for secret in notes)
        assert "WHISPER-" not in kept
        first = [e.payload["message"]["content"] for e in agent_heard if e.type == "note"]
        assert first and all(secret in notes for secret in first)
        assert any(e.type == "whisper" for e in alice_heard)


async def test_on_a_redis_cluster(make_client: MakeClient, cluster_url: str) -> None:
    """A note is on its session's channel (its slot): the agent hears it, live and resumed,
    and the customer's stream on the same channel skips it."""
    client = await make_client(Settings(redis_url=cluster_url, insecure=True))
    await create(client, "kn")
    async with (
        open_stream(client, session_events("kn")) as (customer, _),
        open_stream(client, session_events("kn", "workbench")) as (agent_view, _),
    ):
        written = (await note(client, "kn", "alice", "cluster secret"))["message"]
        await chat(client, "kn", "hello")
        assert (await agent_view.next_of("note", timeout=5.0)).payload["message"] == written
        assert not [e for e in await heard(customer) if "cluster secret" in str(e.data)]
    async with open_stream(client, session_events("kn", "workbench"), headers={"Last-Event-ID": "0-0"}) as (
        agent_view,
        _,
    ):
        assert next(e.type for e in await heard(agent_view) if e.type in ("note", "new_message")) == "note"
