"""Redis bytes per conversation (docs/security.md, "Bounds"): conversations of a given size
played through the real app (HTTP API, in process) against a fresh redis-server, with
``INFO memory`` before and after, and again once the channel histories have expired.

``python -m bench.conversation_bytes [CONVERSATIONS] [MESSAGES] [CHARACTERS]``"""

import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from app.factory import create_app
from app.process.settings import Settings
from bench.procs import RedisProcess
from tests.support.processes import HOST

HISTORY_TTL = 5.0  # seconds: short, so that the figure without histories comes soon
UNLIMITED = 10**6


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def converse(
    client: TestClient[web.Request, web.Application], name: str, messages: int, text: str
) -> None:
    """A quarter of the messages from the customer (each with the bot's reply), a hand-off,
    half from an agent, and a close."""
    await client.post("/chatbot/api/sessions", json={"session_name": name})
    for _ in range(messages // 4):
        await client.post("/chatbot/api/chat", json={"session_name": name, "content": text})
    await client.post("/chatbot/api/manual/escalate", json={"session_name": name})
    agent = {"agent_id": "a1"}
    await client.post(f"/workbench/api/sessions/{name}/takeover", json=agent)
    for _ in range(messages // 2):
        await client.post(f"/workbench/api/sessions/{name}/messages", json={**agent, "content": text})
    await client.post(f"/workbench/api/sessions/{name}/close", json=agent)


async def measure(conversations: int, messages: int, characters: int) -> str:
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisProcess(Path(workdir))
        server.start()
        url = f"redis://{HOST}:{server.port}/0"
        redis = Redis.from_url(url)
        settings = Settings(
            port=0,
            redis_url=url,
            insecure=True,
            history_ttl=HISTORY_TTL,
            start_rate=UNLIMITED,
            rate_limit=UNLIMITED,
            rate_burst=UNLIMITED,
        )
        client = TestClient(TestServer(create_app(settings)))
        try:
            await client.start_server()
            await client.post("/chatbot/api/sessions", json={"session_name": "warm-up"})
            before = await used_memory(redis)
            text = "x" * characters
            for i in range(conversations):
                await converse(client, f"conversation-{i}", messages, text)
            live = (await used_memory(redis) - before) / conversations
            await asyncio.sleep(HISTORY_TTL + 1)
            kept = (await used_memory(redis) - before) / conversations
            keys = await redis.dbsize()
        finally:
            await client.close()
            await redis.aclose()
            server.stop()
    return (
        f"{conversations} conversations of {messages} messages of {characters} characters: "
        f"{live:,.0f} bytes each with their histories, {kept:,.0f} once those expired "
        f"({keys} keys)\n"
    )


def main(argv: list[str]) -> None:
    counts = [int(a) for a in argv] + [200, 20, 200][len(argv) :]
    sys.stdout.write(asyncio.run(measure(*counts[:3])))


if __name__ == "__main__":
    main(sys.argv[1:])
