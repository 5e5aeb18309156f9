"""Satisfaction (docs/api.md, "Satisfaction"): once closed, a conversation is rated once by its
customer. The rating is kept in the session, heard as ``rating`` on every stream of the session
(the supervisor's, an agent's, the customer's), sent to the webhooks as conversation.rated and
counted in ``switchboard_rating_score``; anything else (not closed, rated already, a bad body,
another's token) is a 4xx that changes and publishes nothing. Two ratings at once on Redis keep
exactly one; a conversation started again under the name has none; a split deployment hears a
rating made on its chatbot process on its workbench process's supervisor stream."""

import asyncio
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpServer

from app.domain.auth import TokenAuthority
from app.keys import BACKENDS
from app.process.settings import Settings
from schemas.envelope import _plainly_valid, schema_errors
from tests.support.api import (
    CHATBOT,
    WORKBENCH,
    Http,
    Reply,
    act,
    bearer,
    call_json,
    create,
    get_session,
    send,
    session_events,
)
from tests.support.app_server import AppClient, MakeClient
from tests.support.metrics import scrape, value
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sse import SSEEvent, SSEStream, open_stream
from tests.support.wait import until

SUPERVISOR = f"{WORKBENCH}/events"
SECRET = "rating-test-secret-0123456789-abcdefghijkl"
QUIET = 0.3
DELIVERED = 10.0  # seconds a webhook may take to arrive
ROUNDS = 8  # conversations rated twice at once
# The fast tier (make test-fast sets SWITCHBOARD_FUZZ_TIER=fast) runs a tenth.
EXAMPLES = 1000 // (10 if os.environ.get("SWITCHBOARD_FUZZ_TIER") == "fast" else 1)


def rating_url(name: str, base: str = "") -> str:
    return f"{base}{CHATBOT}/sessions/{name}/rating"


async def rate(
    http: Http,
    name: str,
    body: Any,
    *,
    status: int = 200,
    base: str = "",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    return await call_json(http, "POST", rating_url(name, base), body, status=status, headers=headers)


async def refused(http: Http, name: str, body: Any, status: int, code: str, **kw: Any) -> dict[str, Any]:
    answer = await rate(http, name, body, status=status, **kw)
    assert answer["error"]["code"] == code, answer
    return answer


async def closed(http: Http, name: str, base: str = "") -> dict[str, Any]:
    await create(http, name, base=base)
    return await act(http, name, "close", "alice", base=base)


async def post_raw(client: AppClient, url: str, data: bytes, content_type: str) -> Reply:
    """A POST of ``data`` (not JSON) as ``content_type``; its JSON answer."""
    async with client.post(url, data=data, headers={"Content-Type": content_type}) as response:
        body = await response.json()
        return Reply(response.status, response.headers.copy(), response.content_type, body, 0.0)


async def next_rating(stream: SSEStream) -> SSEEvent:
    """The stream's next event that is not ambient; it must be the rating."""
    [event] = await stream.take(1)
    assert event.type == "rating", event
    assert event.id is not None and event.data["source"] == "ai_chatbot", event
    return event


async def test_rated_once_after_close_heard_by_supervisor_agent_and_customer(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(settings)
    await create(client, "r1")
    async with (
        open_stream(client, SUPERVISOR) as (supervisor, _),
        open_stream(client, session_events("r1", "workbench")) as (agent_view, _),
        open_stream(client, session_events("r1")) as (customer, _),
    ):
        await refused(client, "r1", {"score": 5}, 409, "not_closed")
        before = await act(client, "r1", "close", "alice")
        for stream in (supervisor, agent_view, customer):  # the refusal published nothing
            [event] = await stream.take(1)
            assert event.type == "status_change" and event.payload["status"] == "closed", event
        session = await rate(client, "r1", {"score": 4, "comment": "Quick, thanks"})
        assert session == {
            **before,
            "rating": {"score": 4, "comment": "Quick, thanks", "at": session["rating"]["at"]},
        }
        assert abs(session["rating"]["at"] - time.time()) < 60
        for stream in (supervisor, agent_view, customer):
            event = await next_rating(stream)
            assert event.payload == {"session_name": "r1", "score": 4, "comment": "Quick, thanks"}, event
        # A second rating is refused, and changes and publishes nothing.
        await refused(client, "r1", {"score": 1}, 409, "already_rated")
        assert await get_session(client, "r1") == session
        assert await get_session(client, "r1", "workbench") == session
        # A later event of the conversation (an agent's note): nothing came before it.
        note = {"agent_id": "bob", "content": "asked for a callback"}
        await call_json(client, "POST", f"{WORKBENCH}/sessions/r1/notes", note)
        for stream in (supervisor, agent_view):
            [event] = await stream.take(1)
            assert event.type == "note", event


async def test_bad_input_is_a_4xx_that_changes_nothing(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    session = await closed(client, "r2")
    bad_bodies: list[Any] = [
        {"score": 0},
        {"score": 6},
        {"score": 3.5},
        {"score": 5.0},
        {"score": True},
        {"score": "5"},
        {"score": None},
        {},
        {"score": 5, "comment": "x" * 1001},
        {"score": 5, "comment": 5},
        {"score": 5, "stars": 5},
    ]
    for body in bad_bodies:
        answer = await refused(client, "r2", body, 400, "validation_error")
        assert set(answer["error"]["fields"]) <= {"score", "comment", "stars"}, (body, answer)
    for reply, code in [
        (await send(client, "POST", rating_url("r2"), [5]), "bad_json"),
        (await send(client, "POST", rating_url("bad!name"), {"score": 5}), "invalid_name"),
    ]:
        assert reply.status == 400 and reply.body["error"]["code"] == code, reply
    not_json = await post_raw(client, rating_url("r2"), b"score=5", "application/x-www-form-urlencoded")
    assert not_json.status == 415, not_json
    await refused(client, "nobody", {"score": 5}, 404, "session_not_found")
    assert await get_session(client, "r2") == session  # nothing changed
    # The longest comment is taken; an empty one is no comment.
    kept = await rate(client, "r2", {"score": 2, "comment": "y" * 1000})
    assert kept["rating"]["comment"] == "y" * 1000
    await closed(client, "r3")
    assert (await rate(client, "r3", {"score": 3, "comment": ""}))["rating"]["comment"] is None
    await closed(client, "r4")
    assert (await rate(client, "r4", {"score": 1, "comment": None}))["rating"]["comment"] is None


async def test_only_the_conversations_own_token(make_client: MakeClient) -> None:
    client = await make_client(
        Settings(port=0, use_redis=False, insecure=False, secret=SECRET), rate_limit=0.001, rate_burst=3
    )
    agent = bearer(TokenAuthority(SECRET).mint("agent", "alice", 3600))
    mine = bearer((await create(client, "r5"))["token"])
    other = bearer((await create(client, "r6"))["token"])
    for name in ("r5", "r6"):
        await act(client, name, "close", "alice", headers=agent)
    await refused(client, "r5", {"score": 5}, 401, "unauthorized")
    await refused(client, "r5", {"score": 5}, 403, "forbidden", headers=other)
    await refused(client, "r5", {"score": 5}, 403, "forbidden", headers=agent)
    assert "rating" not in await call_json(client, "GET", f"{CHATBOT}/sessions/r5", headers=mine)
    assert (await rate(client, "r5", {"score": 5}, headers=mine))["rating"]["score"] == 5
    # Limited per token like every action (a burst of 3 here).
    await refused(client, "r5", {"score": 5}, 409, "already_rated", headers=mine)
    await refused(client, "r5", {"score": 5}, 409, "already_rated", headers=mine)
    await refused(client, "r5", {"score": 5}, 429, "rate_limited", headers=mine)


async def test_a_conversation_started_again_has_no_rating(
    make_client: MakeClient, settings: Settings
) -> None:
    """Retention deletes the closed conversation; one started again under its name (a new
    incarnation) is not rated, may be rated once closed, and the old one's token is refused."""
    secure = replace(settings, insecure=False, secret=SECRET)
    client = await make_client(secure)
    agent = bearer(TokenAuthority(SECRET).mint("agent", "alice", 3600))
    first = await create(client, "again")
    await act(client, "again", "close", "alice", headers=agent)
    await rate(client, "again", {"score": 1, "comment": "slow"}, headers=bearer(first["token"]))
    store = client.app[BACKENDS].store
    swept = await store.sweep(time.time() + secure.retention + 60)
    assert swept.deleted >= 1, swept
    second = await create(client, "again")
    assert second["incarnation"] != first["incarnation"] and "rating" not in second, second
    token = bearer(second["token"])
    await refused(client, "again", {"score": 5}, 409, "not_closed", headers=token)
    await act(client, "again", "close", "alice", headers=agent)
    await refused(client, "again", {"score": 5}, 401, "unauthorized", headers=bearer(first["token"]))
    rated = await rate(client, "again", {"score": 5}, headers=token)
    assert rated["rating"]["score"] == 5 and rated["rating"]["comment"] is None


async def test_counted_by_score_in_the_process_that_accepted_it(make_client: MakeClient) -> None:
    client = await make_client(Settings(port=0, use_redis=False, insecure=True))
    for name, score in (("m1", 2), ("m2", 5), ("m3", 5)):
        await closed(client, name)
        await rate(client, name, {"score": score})
    await refused(client, "m1", {"score": 1}, 409, "already_rated")  # not counted
    samples = await scrape(client)
    buckets = {
        le: value(samples, "switchboard_rating_score_bucket", le=le) for le in ("1.0", "2.0", "4.0", "5.0")
    }
    assert buckets == {"1.0": 0.0, "2.0": 1.0, "4.0": 1.0, "5.0": 3.0}, buckets
    assert value(samples, "switchboard_rating_score_count") == 3.0
    assert value(samples, "switchboard_rating_score_sum") == 12.0


HOOKS = web.AppKey("hooks", list)


@dataclass(frozen=True)
class Receiver:
    """A webhook receiver in the test's own loop: what it was sent, by ``url``."""

    url: str
    received: list[dict[str, Any]]

    async def types(self, count: int) -> list[str]:
        """The types of the records received, once at least ``count`` have come (bounded)."""
        await until(lambda: self.received, lambda got: len(got) >= count, timeout=DELIVERED, what="webhooks")
        return [record["type"] for record in self.received]


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    async def hook(request: web.Request) -> web.Response:
        request.app[HOOKS].append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app[HOOKS] = []
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return Receiver(str(server.make_url("/hook")), app[HOOKS])


async def test_the_webhook_receiver_gets_conversation_rated(
    make_client: MakeClient, settings: Settings, receiver: Receiver
) -> None:
    client = await make_client(settings, webhook_urls=(receiver.url,))
    await closed(client, "wh")
    rated = await rate(client, "wh", {"score": 3, "comment": "fine"})
    assert await receiver.types(3) == ["conversation.started", "conversation.closed", "conversation.rated"]
    event = receiver.received[2]
    assert event["rating"] == rated["rating"] == {"score": 3, "comment": "fine", "at": rated["rating"]["at"]}
    assert event["previous_status"] == "closed" and event["session"]["status"] == "closed", event
    assert event["session"]["session_name"] == "wh" and event["id"], event


async def test_of_two_at_once_exactly_one_is_kept(make_client: MakeClient, redis_url: str) -> None:
    """Two processes' apps on one Redis rate the same conversation at the same moment. A third
    closed it, so each reads it before its script: both start from the unrated session, and
    the second script finds it changed and works the move out again (the compare-and-set of
    docs/architecture.md, "One action, one script"). One 200, one 409 already_rated, one
    rating stored, published and counted."""
    redis = Settings(port=0, redis_url=redis_url, insecure=True)
    one, other, third = await make_client(redis), await make_client(redis), await make_client(redis)
    kept: dict[str, int] = {}
    for n in range(ROUNDS):
        name = f"race-{n}"
        await closed(third, name)
        replies = await asyncio.gather(
            send(one, "POST", rating_url(name), {"score": 1}),
            send(other, "POST", rating_url(name), {"score": 5}),
        )
        assert sorted(r.status for r in replies) == [200, 409], replies
        [won] = [r for r in replies if r.status == 200]
        [lost] = [r for r in replies if r.status == 409]
        assert lost.body["error"]["code"] == "already_rated", lost
        assert (await get_session(other, name))["rating"] == won.body["rating"]
        kept[name] = won.body["rating"]["score"]
    # Every session's history, resumed from the start on the supervisor stream: one rating each.
    async with open_stream(one, SUPERVISOR, headers={"Last-Event-ID": "0-0"}) as (history, _):
        ratings = [e.payload for e in await history.drain(QUIET) if e.type == "rating"]
    assert sorted((p["session_name"], p["score"]) for p in ratings) == sorted(kept.items()), ratings
    counts = [value(await scrape(app), "switchboard_rating_score_count") for app in (one, other)]
    assert sum(c or 0.0 for c in counts) == ROUNDS, counts


async def test_a_split_deployment_hears_it_on_the_workbench(
    server_process: StartServer, redis_url: str
) -> None:
    chatbot = server_process("--chatbot", "--redis-url", redis_url, env=REDIS_ON)
    workbench = server_process("--workbench", "--redis-url", redis_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        await create(http, "split", base=chatbot.url)
        await act(http, "split", "close", "alice", base=workbench.url)
        async with open_stream(http, workbench.url + SUPERVISOR) as (supervisor, _):
            await rate(http, "split", {"score": 5, "comment": "great"}, base=chatbot.url)
            event = await next_rating(supervisor)
            assert event.payload == {"session_name": "split", "score": 5, "comment": "great"}, event
        await refused(http, "split", {"score": 5}, 409, "already_rated", base=chatbot.url)
        assert (await get_session(http, "split", "workbench", base=workbench.url))["rating"]["score"] == 5


# The plain check of the rating event (schemas.envelope) accepts nothing its schema refuses.
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 8), st.floats(allow_nan=False), st.text(max_size=4)
)
comments = st.one_of(st.none(), st.sampled_from(["", "ok", "c" * 1000, "c" * 1001]), leaves)
payloads = st.fixed_dictionaries(
    {
        "session_name": st.one_of(st.sampled_from(["r1", "", "a b", "a" * 65]), leaves),
        "score": st.one_of(st.integers(-1, 7), leaves),
        "comment": comments,
    },
    optional={"extra": leaves},
)


@hypothesis_settings(max_examples=EXAMPLES, deadline=None)
@given(
    payload=payloads,
    source=st.sampled_from(["ai_chatbot", "agent_workbench", "system"]),
    timestamp=st.one_of(st.integers(-1, 2**33), leaves),
)
def test_the_plain_check_of_a_rating_accepts_nothing_the_schema_refuses(
    payload: dict[str, Any], source: str, timestamp: Any
) -> None:
    event = {"type": "rating", "payload": payload, "timestamp": timestamp, "source": source}
    if _plainly_valid(event):
        assert schema_errors(event) == {}, event


def test_what_a_rating_publishes_takes_the_plain_check() -> None:
    for comment in (None, "ok", "c" * 1000):
        payload = {"session_name": "r1", "score": 5, "comment": comment}
        assert _plainly_valid({"type": "rating", "payload": payload, "timestamp": 1, "source": "ai_chatbot"})


async def test_on_a_redis_cluster(make_client: MakeClient, cluster_url: str, receiver: Receiver) -> None:
    """The rating and its event are in the session's slot; the webhook record goes through the
    session's outbox (the queue is in another slot), once."""
    settings = Settings(redis_url=cluster_url, insecure=True, webhook_urls=(receiver.url,))
    client = await make_client(settings)
    await closed(client, "kr")
    async with open_stream(client, session_events("kr", "workbench")) as (agent_view, _):
        await rate(client, "kr", {"score": 2})
        assert (await next_rating(agent_view)).payload == {"session_name": "kr", "score": 2, "comment": None}
    await refused(client, "kr", {"score": 3}, 409, "already_rated")
    assert (await get_session(client, "kr", "workbench"))["rating"]["score"] == 2
    assert await receiver.types(3) == ["conversation.started", "conversation.closed", "conversation.rated"]
    await asyncio.sleep(QUIET)  # nothing more comes: the outbox relayed the record once
    assert len(receiver.received) == 3, receiver.received
