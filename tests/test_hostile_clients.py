"""What a client can do to the server on purpose or by accident, against real server processes:
it never earns a 5xx or an ERROR traceback in the log.

Early disconnects: a client that sends a stream request and drops the connection at once (a
reset, not a clean close) used to meet an assertion in aiohttp-sse while the stream started:
about one try in five answered 500 with a traceback, for anyone with a session token."""

import asyncio
import socket

import aiohttp

from tests.support.api import CHATBOT, create, health
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sockets import close_with_reset

TRIES = 100
TRY_TIMEOUT = 2.0  # seconds for one connect-send-reset


async def send_and_reset(port: int, request: bytes) -> None:
    """Send ``request`` and reset the connection at once (an RST, no FIN)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(TRY_TIMEOUT):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, request)
    finally:
        close_with_reset(sock)


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


async def exchange_raw(port: int, request: bytes) -> bytes:
    """Send ``request`` as it is and read the answer's head (the server closes after it)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TRY_TIMEOUT)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(512), TRY_TIMEOUT)
    finally:
        writer.close()


async def test_oversized_request_lines_and_headers_are_one_warning_each(
    server_process: StartServer,
) -> None:
    """A request line or a header over aiohttp's 8,190 bytes: refused with 400, logged as one
    WARNING naming the error and the peer: no traceback, and nothing of the request (a token
    in the query string stays out of the log)."""
    process = server_process("--no-redis")
    secret = "SECRET-TOKEN-0123456789"
    long_line = f"GET {CHATBOT}/sessions/x/events?token={secret}{'A' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = f"GET /health?token={secret} HTTP/1.1\r\nHost: x\r\nX-Big: {'B' * 9000}\r\n\r\n"
    for request in (long_line, long_header):
        answer = await exchange_raw(process.port, request.encode())
        assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    await asyncio.sleep(0.3)
    log = process.log()
    refusals = [line for line in log.splitlines() if "refused a malformed request" in line]
    assert len(refusals) == 2 and all(" WARNING " in line for line in refusals), log[-2000:]
    assert "Traceback" not in log and " ERROR " not in log, log[-2000:]
    assert secret not in log, log[-2000:]
