"""Paged listings (issue 12): the queue (``GET /workbench/api/sessions``) and the transcript
(``GET /{chatbot,workbench}/api/sessions/{name}/messages``) answer at most ``limit`` items (100
by default, 1,000 at most) and a ``next_cursor`` to continue from, on memory and on a real
redis-server:

- pages come in queue (or transcript) order, with no duplicate and no gap, and only the last one
  says ``next_cursor: null``;
- a session that leaves the status between two pages is not listed again;
- a bad ``limit`` or ``cursor`` (or an unknown parameter) is a 400 that changes nothing, and a
  transcript cursor whose message has been trimmed away is a 400 ``invalid_cursor``;
- a big queue answers a bounded page (the finding: 17,733 sessions, 3.2 MB, in one answer).
"""

import asyncio
import json
from typing import Any

import pytest

from app.domain.store.base import DEFAULT_PAGE, MAX_PAGE
from app.process.settings import MIN_TRANSCRIPT_BYTES, Settings
from tests.support.api import (
    STATUSES,
    WORKBENCH,
    act,
    call_json,
    chat,
    create,
    escalate,
    every_page,
    send,
    with_query,
)
from tests.support.app_server import AppClient, MakeClient

QUEUE = f"{WORKBENCH}/sessions"
WAITING = f"{QUEUE}?status=waiting_agent"
SUBS = ("chatbot", "workbench")
AGENT = "alice"
BATCH = 50  # sessions set up at once when their order does not matter
# What a default page of the queue may weigh: 100 sessions of about 250 bytes each, with room.
DEFAULT_PAGE_BYTES = 64 * 1024

# (query, the field a validation error names) for each malformed query of a listing.
BAD_QUERIES: list[tuple[dict[str, str], str]] = [
    *(
        ({"limit": value}, "limit")
        for value in ("abc", "0", "1001", "1.5", "-1", "", " 5", "+5", "1e3", "١٠")
    ),
    *(({"cursor": value}, "cursor") for value in ("", "xyz", "ABC", "0" * 33, "12 3", "12\n")),
    ({"offset": "100"}, "offset"),
]


# --- setting up ------------------------------------------------------------------------------


def transcript_url(name: str, sub: str = "workbench") -> str:
    return f"/{sub}/api/sessions/{name}/messages"


def names_of(pages: list[dict[str, Any]]) -> list[str]:
    return [session["session_name"] for page in pages for session in page["sessions"]]


def ids_of(pages: list[dict[str, Any]]) -> list[str]:
    return [message["id"] for page in pages for message in page["messages"]]


# Hundreds of conversations from one address: past --start-rate unless lifted.
UNLIMITED = 1_000_000


@pytest.fixture
async def client(make_client: MakeClient, settings: Settings) -> AppClient:
    return await make_client(settings, start_rate=UNLIMITED)


async def waiting_in_order(client: AppClient, count: int, prefix: str) -> list[str]:
    """``count`` sessions escalated one after the other: the queue order is this list's."""
    made = []
    for index in range(count):
        name = f"{prefix}-{index:04d}"
        await create(client, name)
        await escalate(client, name)
        made.append(name)
    return made


async def waiting_at_once(client: AppClient, count: int, prefix: str) -> None:
    """``count`` waiting sessions, set up BATCH at a time (their order is not looked at)."""

    async def one(name: str) -> None:
        await create(client, name)
        await escalate(client, name)

    for start in range(0, count, BATCH):
        await asyncio.gather(*(one(f"{prefix}-{i:04d}") for i in range(start, min(count, start + BATCH))))


async def chatted(client: AppClient, name: str, messages: int, content: str = "hello") -> None:
    """A session whose transcript holds ``messages`` messages (the customer's and the bot's)."""
    assert messages % 2 == 0
    await create(client, name)
    for index in range(messages // 2):
        answer = await chat(client, name, f"{content} {index}")
        assert answer["reply"] is not None, answer


async def listed(client: AppClient, names: list[str]) -> dict[str, Any]:
    """Everything the API lists: every status's whole queue, and each of ``names`` with its
    whole transcript."""
    state: dict[str, Any] = {}
    for status in STATUSES:
        state[status] = names_of(await every_page(client, f"{QUEUE}?status={status}", limit=MAX_PAGE))
    for name in names:
        state[name] = (
            await call_json(client, "GET", f"{WORKBENCH}/sessions/{name}"),
            ids_of(await every_page(client, transcript_url(name), limit=MAX_PAGE)),
        )
    return state


async def refused(client: AppClient, url: str, code: str, field: str | None = None) -> None:
    reply = await send(client, "GET", url)
    assert reply.status == 400, (url, reply.status, reply.body)
    assert reply.content_type == "application/json", (url, reply.headers)
    error = reply.body["error"]
    assert error["code"] == code and error["message"], (url, error)
    if field is not None:
        assert list(error["fields"]) == [field], (url, error)


# --- the queue -------------------------------------------------------------------------------


async def test_the_queue_comes_in_pages_in_order(client: AppClient) -> None:
    """250 escalated sessions: pages of 100, 100 and 50 in queue order, each session once, the
    last page's next_cursor null; at most 1,000 in one page."""
    arrivals = await waiting_in_order(client, 250, "q")

    pages = await every_page(client, WAITING)
    assert [len(page["sessions"]) for page in pages] == [DEFAULT_PAGE, DEFAULT_PAGE, 50]
    assert names_of(pages) == arrivals
    assert [page["next_cursor"] is None for page in pages] == [False, False, True]
    assert all(s["status"] == "waiting_agent" for page in pages for s in page["sessions"])
    # The default status is waiting_agent; an explicit limit=100 is the default.
    assert await every_page(client, QUEUE) == pages
    assert await every_page(client, WAITING, limit=DEFAULT_PAGE) == pages

    whole = await every_page(client, WAITING, limit=MAX_PAGE)
    assert len(whole) == 1 and names_of(whole) == arrivals and whole[0]["next_cursor"] is None
    small = await every_page(client, WAITING, limit=7)
    assert names_of(small) == arrivals and len(small) == 36
    one = await call_json(client, "GET", with_query(WAITING, limit=1))
    assert names_of([one]) == arrivals[:1] and one["next_cursor"] is not None


async def test_a_session_that_leaves_the_status_between_pages_is_not_listed_twice(
    client: AppClient,
) -> None:
    arrivals = await waiting_in_order(client, 30, "m")
    first = await call_json(client, "GET", with_query(WAITING, limit=10))
    assert names_of([first]) == arrivals[:10]

    # Between the pages: one already listed is taken over, one not yet listed too, another
    # not yet listed is closed; one already listed leaves and comes back (at the end).
    for name, action in ((arrivals[3], "takeover"), (arrivals[15], "takeover"), (arrivals[24], "close")):
        await act(client, name, action, AGENT)
    await act(client, arrivals[7], "takeover", AGENT)
    await act(client, arrivals[7], "release", AGENT)
    await escalate(client, arrivals[7])

    rest: list[dict[str, Any]] = []
    cursor = first["next_cursor"]
    for _ in range(10):
        page = await call_json(client, "GET", with_query(WAITING, limit=10, cursor=cursor))
        rest.append(page)
        if (cursor := page["next_cursor"]) is None:
            break
    assert cursor is None
    later = names_of(rest)
    assert later == [n for n in arrivals[10:] if n not in (arrivals[15], arrivals[24])] + [arrivals[7]]
    assert not set(later) & (set(names_of([first])) - {arrivals[7]})
    assert len(later) == len(set(later))


async def test_a_big_queue_answers_a_bounded_page(make_client: MakeClient, settings: Settings) -> None:
    """1,000 waiting sessions: the default answer holds 100 of them (the finding: a whole
    queue in one answer); at most 1,000 in one."""
    client = await make_client(settings, max_waiting=2 * MAX_PAGE, start_rate=UNLIMITED)
    await waiting_at_once(client, MAX_PAGE, "big")

    reply = await send(client, "GET", WAITING)
    assert reply.status == 200, reply.body
    assert len(reply.body["sessions"]) == DEFAULT_PAGE and reply.body["next_cursor"] is not None
    raw = json.dumps(reply.body).encode()
    assert len(raw) < DEFAULT_PAGE_BYTES, len(raw)

    pages = await every_page(client, WAITING, limit=MAX_PAGE)
    assert len(pages[0]["sessions"]) == MAX_PAGE
    # A page that ends exactly at the end may still give a cursor; the page after it is empty.
    assert len(pages) <= 2 and all(not page["sessions"] for page in pages[1:])
    assert len(set(names_of(pages))) == MAX_PAGE
    await refused(client, with_query(WAITING, limit=MAX_PAGE + 1), "validation_error", "limit")


# --- the transcript --------------------------------------------------------------------------


async def test_the_transcript_comes_in_pages_in_order(client: AppClient) -> None:
    """230 messages: pages of 100, 100 and 30, oldest first, each message once, on both sides."""
    await chatted(client, "long", 230)
    for sub in SUBS:
        url = transcript_url("long", sub)
        whole = await every_page(client, url, limit=MAX_PAGE)
        assert len(whole) == 1 and len(ids_of(whole)) == 230
        pages = await every_page(client, url)
        assert [len(page["messages"]) for page in pages] == [DEFAULT_PAGE, DEFAULT_PAGE, 30]
        assert all(page["session_name"] == "long" for page in pages)
        assert ids_of(pages) == ids_of(whole) and len(set(ids_of(pages))) == 230
        assert [page["next_cursor"] is None for page in pages] == [False, False, True]
        # The cursor is the id of the page's last message.
        assert pages[0]["next_cursor"] == pages[0]["messages"][-1]["id"]
        times = [m["created_at"] for page in pages for m in page["messages"]]
        assert times == sorted(times)


async def test_a_cursor_whose_message_was_trimmed_away_is_refused(
    make_client: MakeClient, settings: Settings
) -> None:
    """A transcript keeps its newest messages: once the message a cursor names is trimmed, the
    cursor is a 400 invalid_cursor (read again from the start), and nothing changed."""
    client = await make_client(settings, transcript_bytes=MIN_TRANSCRIPT_BYTES, start_rate=UNLIMITED)
    # 25 customer messages of 3,000 characters: past the bound, so each new one trims the oldest.
    await chatted(client, "trimmed", 50, "a" * 3000)
    first = await call_json(client, "GET", with_query(transcript_url("trimmed"), limit=1))
    cursor = first["next_cursor"]
    assert cursor == first["messages"][0]["id"]
    await call_json(client, "GET", with_query(transcript_url("trimmed"), cursor=cursor))  # still there

    # More long messages until the cursor's message is trimmed away (the first or second does).
    for index in range(5):
        await chat(client, "trimmed", "b" * 3000 + str(index))
        before = await listed(client, ["trimmed"])
        if cursor not in before["trimmed"][1]:
            break
    assert cursor not in before["trimmed"][1]
    for sub in SUBS:
        await refused(client, with_query(transcript_url("trimmed", sub), cursor=cursor), "invalid_cursor")
    assert await listed(client, ["trimmed"]) == before
    # From the start again: the transcript as it is now.
    assert ids_of(await every_page(client, transcript_url("trimmed"))) == before["trimmed"][1]


# --- bad input -------------------------------------------------------------------------------


async def test_a_bad_limit_or_cursor_is_a_400_that_changes_nothing(client: AppClient) -> None:
    await waiting_in_order(client, 3, "w")
    await chatted(client, "talk", 4)
    queue_cursor = (await call_json(client, "GET", with_query(WAITING, limit=1)))["next_cursor"]
    message_cursor = (await call_json(client, "GET", with_query(transcript_url("talk"), limit=1)))[
        "next_cursor"
    ]
    before = await listed(client, ["talk", "w-0000"])

    urls = [WAITING, f"{QUEUE}?status=bot_active", *(transcript_url("talk", sub) for sub in SUBS)]
    for url in urls:
        for query, field in BAD_QUERIES:
            await refused(client, with_query(url, **query), "validation_error", field)
    # Well-formed, but not a cursor this listing can continue from: another listing's, or one
    # it never handed out.
    for cursor in (message_cursor, "c0ffee1234abcd56", "9" * 25):
        await refused(client, with_query(WAITING, cursor=cursor), "invalid_cursor")
    for sub in SUBS:
        for cursor in (queue_cursor, "0123456789abcdef", "0"):
            await refused(client, with_query(transcript_url("talk", sub), cursor=cursor), "invalid_cursor")
    # An unknown session is a 404 whatever the cursor.
    reply = await send(client, "GET", with_query(transcript_url("nobody"), cursor="0123456789abcdef"))
    assert reply.status == 404 and reply.body["error"]["code"] == "session_not_found", reply.body

    assert await listed(client, ["talk", "w-0000"]) == before
