"""What a client can do to the server on purpose or by accident, against real server processes:
it never earns a 5xx or an ERROR traceback in the log.

Early disconnects: a client that sends a stream request and drops the connection at once (a
reset, not a clean close) used to meet an assertion in aiohttp-sse while the stream started:
about one try in five answered 500 with a traceback, for anyone with a session token."""

import asyncio
import socket
import struct

import aiohttp

from tests.support.api import CHATBOT, create, health
from tests.support.processes import REDIS_ON, StartServer

TRIES = 100
TRY_TIMEOUT = 2.0  # seconds for one connect-send-reset


async def send_and_reset(port: int, request: bytes) -> None:
    """Send ``request`` and reset the connection at once (SO_LINGER 0: an RST, no FIN)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        async with asyncio.timeout(TRY_TIMEOUT):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, request)


async def test_a_hundred_early_disconnects_earn_no_500(server_process: StartServer, redis_url: str) -> None:
    process = server_process("--redis-url", redis_url, env=REDIS_ON)
    async with aiohttp.ClientSession() as http:
        await create(http, "early", base=process.url)
    request = (
        f"GET {CHATBOT}/sessions/early/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    for _ in range(TRIES):
        await send_and_reset(process.port, request)
    # The server is still well, and said nothing alarming about any of it.
    async with aiohttp.ClientSession() as http:
        assert (await health(http, process.url))["status"] == "ok"
    await asyncio.sleep(0.5)  # the last handlers finish their log lines
    log = process.log()
    request_lines = [line for line in log.splitlines() if f"GET {CHATBOT}/sessions/early/events" in line]
    assert request_lines, log[-2000:]  # the tries did reach the handler
    assert not [line for line in request_lines if " 500 " in line], log[-3000:]
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
