"""The race (docs/bots.md): from the moment a takeover answers 200, no bot chunk and no bot
message of that session is written, stored or published, on any process.

A slow streaming bot (examples/webhook_bot.py, a real process) answers customers on server A;
an agent takes each conversation over on server B at a random moment of the reply; Redis is
between them. For each of 200 rounds: no chunk of the customer's streamed answer arrived after
the takeover's 200 (both connections read by one loop, each byte stamped as it arrived:
tests/support/timed.py); the answer ends with ``cancelled`` and stores nothing, or with
``done`` and a complete reply stored before the takeover (the session channel's order); the
transcript holds no partial reply."""

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.api import CHATBOT, WORKBENCH, create, session_events
from tests.support.processes import MANY_STARTS, PeerProcess, ServerProcess
from tests.support.redis_server import RedisServer
from tests.support.sse import open_stream
from tests.support.timed import frame_ends, post

ROUNDS = 200
AT_ONCE = 10  # rounds run together
LATEST_TAKEOVER = 0.3  # seconds into the reply (the bot takes about 0.25 s to answer)
SECRET = "r" * 40
ROUND_TIMEOUT = 20.0


async def one_round(
    http: aiohttp.ClientSession, a: ServerProcess, b: ServerProcess, n: int, rng: random.Random
) -> str:
    """Returns how the answer ended (done or cancelled); asserts the guarantee."""
    name = f"race-{n}"
    await create(http, name, base=a.url)
    async with open_stream(http, f"{b.url}{session_events(name)}") as (watch, _):
        answer = await post(a.port, f"{CHATBOT}/chat/stream", {"session_name": name, "content": f"round {n}"})
        await asyncio.sleep(rng.uniform(0.0, LATEST_TAKEOVER))
        takeover = await post(b.port, f"{WORKBENCH}/sessions/{name}/takeover", {"agent_id": f"agent-{n}"})
        async with asyncio.timeout(ROUND_TIMEOUT):
            await asyncio.gather(answer.closed, takeover.closed)
        assert takeover.status() == 200, takeover.data
        taken_at = takeover.arrival(takeover.data.index(b"HTTP/1.1 200"))
        late = [end for end in frame_ends(answer.data, b"chunk") if answer.arrival(end) > taken_at]
        assert not late, f"round {n}: {len(late)} chunk(s) after the takeover's 200"
        ended = "cancelled" if frame_ends(answer.data, b"cancelled") else "done"
        assert frame_ends(answer.data, ended.encode()), answer.data[-300:]
        # The session channel, in order, up to the takeover's status change.
        seen: list[tuple[str, str | None]] = []
        while not seen or seen[-1][0] != "status_change":
            event = await watch.next_of("new_message", "agent_joined", "status_change")
            seen.append((event.type, event.payload.get("message", {}).get("role")))
    bot_said = [m for m in await transcript_of(http, b, name) if m["role"] == "bot"]
    if ended == "done" and last_data(answer.data)["reply"] is None:
        ended = "before"  # the takeover came before the customer's message: no bot turn at all
    if ended != "done":
        assert not bot_said and ("new_message", "bot") not in seen, f"round {n}: {seen}"
    else:
        assert [m["content"] for m in bot_said] == [
            f"You asked: 'round {n}'. Here is what I know about that."
        ]
        assert seen.index(("new_message", "bot")) < seen.index(("agent_joined", None)), seen
    return ended


def last_data(data: bytes) -> dict[str, Any]:
    """The data of the answer's last frame."""
    frame = data[: data.rindex(b"\n\n")].rpartition(b"\n\n")[2]
    line = frame.partition(b"data: ")[2].partition(b"\n")[0]
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


async def transcript_of(
    http: aiohttp.ClientSession, server: ServerProcess, name: str
) -> list[dict[str, str]]:
    async with http.get(f"{server.url}{WORKBENCH}/sessions/{name}/messages") as response:
        body = orjson.loads(await response.read())
        assert response.status == 200, body
        return list(body["messages"])


async def test_no_bot_word_after_a_takeover(
    redis_server: RedisServer, server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    rng = random.Random(14)
    with PeerProcess("examples.webhook_bot", "--secret", SECRET, "--pace", "0.02", log_dir=tmp_path) as bot:
        bot_flags = ("--bot", "webhook", "--bot-url", f"{bot.url}/bot", "--bot-secret", SECRET, *MANY_STARTS)
        env = {"REDIS_URL": redis_server.url}
        a = server_process(*bot_flags, "--rate-limit", "1000", "--rate-burst", "1000", env=env)
        b = server_process(*bot_flags, "--rate-limit", "1000", "--rate-burst", "1000", env=env)
        endings: list[str] = []
        async with aiohttp.ClientSession() as http:
            for first in range(0, ROUNDS, AT_ONCE):
                endings += await asyncio.gather(
                    *(one_round(http, a, b, n, rng) for n in range(first, first + AT_ONCE))
                )
    # Both endings happened (the takeovers fell before and after replies ended).
    assert endings.count("cancelled") >= ROUNDS // 10 and endings.count("done") >= ROUNDS // 10, endings
