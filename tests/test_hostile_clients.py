"""What a client can do to the server on purpose or by accident, against real server processes:
it never earns a 5xx or an ERROR traceback in the log, and it cannot hold a connection for ever.

Early disconnects: a client that sends a stream request and drops the connection at once (a
reset, not a clean close) used to meet an assertion in aiohttp-sse while the stream started:
about one try in five answered 500 with a traceback, for anyone with a session token.

Slow clients: 600 connections sending one header line every 2 s were all still open after
40 s. Each now has --client-timeout to send a whole head, and as long again for its body.

Malformed requests: aiohttp refuses them before any middleware runs, in text/plain; they now get
the JSON error shape, and one WARNING line without the request in it."""

import asyncio
import socket
import time

import aiohttp

from tests.support.api import CHATBOT, create, health, session_events
from tests.support.metrics import by_label, scrape
from tests.support.processes import REDIS_ON, StartServer
from tests.support.sockets import HOST, RawAnswer, close_with_reset, raw_exchange
from tests.support.sse import open_stream

TRIES = 100
TRY_TIMEOUT = 2.0  # seconds for one connect-send-reset
CLIENT_TIMEOUT = 2.0  # the servers' --client-timeout below
SLOW_HEADS = 100  # connections sending a header line every DRIP seconds
SLOW_BODIES = 20  # connections sending a body byte every DRIP seconds
DRIP = 1.0
DRIPS = 6  # a slow client gives up after DRIPS * DRIP seconds: the server should have closed it
CLOSED_BY = CLIENT_TIMEOUT + 1.5  # seconds after connecting: the deadline and a margin
STREAM_ROUNDS = 20  # heartbeats (0.5 s apart) read at most after the slow clients are gone
ANSWER_TIMEOUT = CLIENT_TIMEOUT + 3.0  # the longest wait for one raw answer (or the close)


async def send_and_reset(port: int, request: bytes) -> None:
    """Send ``request`` and reset the connection at once (an RST, no FIN)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(TRY_TIMEOUT):
            await loop.sock_connect(sock, (HOST, port))
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


async def slow_client(port: int, head: bytes, drip: bytes) -> tuple[float | None, bytes]:
    """Send ``head``, then ``drip`` every DRIP seconds (at most DRIPS times): the seconds from
    connecting until the server closed the connection (None if it never did), and whatever it
    sent back."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), TRY_TIMEOUT)
    started = loop.time()
    try:
        writer.write(head)
        for _ in range(DRIPS):
            try:
                answer = await asyncio.wait_for(reader.read(1024), DRIP)
            except TimeoutError:
                writer.write(drip)
                continue
            except ConnectionResetError:
                answer = b""
            return loop.time() - started, answer
        return None, b""
    finally:
        writer.close()


async def test_slow_clients_are_cut_off_and_streams_are_not(server_process: StartServer) -> None:
    """SLOW_HEADS clients sending a header line and SLOW_BODIES sending a body byte every second
    are each closed, unanswered, CLIENT_TIMEOUT after they connected, though they never stop
    sending; meanwhile an event stream opened before them goes on delivering heartbeats long
    after, and /metrics counts every closure by what it was waiting for."""
    process = server_process("--no-redis", "--client-timeout", str(CLIENT_TIMEOUT), "--heartbeat", "0.5")
    slow_head = f"GET {CHATBOT}/sessions/x/events HTTP/1.1\r\nHost: x\r\n".encode()
    slow_body = (
        f"POST {CHATBOT}/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    async with aiohttp.ClientSession() as http:
        await create(http, "patient", base=process.url)
        async with open_stream(http, process.url + session_events("patient")) as (stream, _):
            opened = time.monotonic()
            results = await asyncio.gather(
                *(slow_client(process.port, slow_head, b"X-Drip: 1\r\n") for _ in range(SLOW_HEADS)),
                *(slow_client(process.port, slow_body, b" ") for _ in range(SLOW_BODIES)),
            )
            closed_after = [seconds for seconds, _ in results]
            assert all(seconds is not None for seconds, _ in results), closed_after
            assert all(CLIENT_TIMEOUT - 0.5 <= s <= CLOSED_BY for s in closed_after if s), closed_after
            assert {answer for _, answer in results} == {b""}  # closed, never answered
            # The stream, older than any of them, still delivers a second after they were cut.
            cut = time.monotonic()
            for _ in range(STREAM_ROUNDS):
                assert (await stream.next(timeout=2.0)).type == "heartbeat"
                if time.monotonic() - cut > 1.0:
                    break
            else:
                raise AssertionError(f"no heartbeat {time.monotonic() - cut:.1f} s after the cut")
            assert time.monotonic() - opened > CLIENT_TIMEOUT + 1.0
        timed_out = by_label(
            await scrape(http, process.url), "switchboard_connections_timed_out_total", "stage"
        )
    assert timed_out["head"] == SLOW_HEADS and timed_out["body"] == SLOW_BODIES, timed_out
    log = process.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def assert_json_refusal(answer: RawAnswer) -> str:
    """A 400 in the JSON error shape that closes the connection; its request id."""
    assert answer.status == 400, answer
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert answer.headers["connection"].lower() == "close", answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff", answer.headers
    error = answer.json()["error"]
    assert error["code"] == "bad_request" and error["message"], error
    assert error["request_id"] == answer.headers["x-request-id"], (error, answer.headers)
    return str(error["request_id"])


async def test_oversized_request_lines_and_headers_get_json_and_one_warning_each(
    server_process: StartServer,
) -> None:
    """A request line or a header over aiohttp's 8,190 bytes: refused with a JSON 400, logged
    as one WARNING naming the error and the peer, with the answer's request id: no traceback,
    and nothing of the request (a token in the query string stays out of log and answer)."""
    process = server_process("--no-redis")
    secret = "SECRET-TOKEN-0123456789"
    long_line = f"GET {CHATBOT}/sessions/x/events?token={secret}{'A' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = f"GET /health?token={secret} HTTP/1.1\r\nHost: x\r\nX-Big: {'B' * 9000}\r\n\r\n"
    ids = []
    for request in (long_line, long_header):
        answer = await raw_exchange(process.port, request.encode(), timeout=ANSWER_TIMEOUT)
        ids.append(assert_json_refusal(answer))
        assert secret.encode() not in answer.body
    await asyncio.sleep(0.3)
    log = process.log()
    refusals = [line for line in log.splitlines() if "refused a malformed request" in line]
    assert len(refusals) == 2 and all(" WARNING " in line for line in refusals), log[-2000:]
    assert all(f"[{id_}]" in line for id_, line in zip(ids, refusals, strict=True)), (ids, refusals)
    assert "Traceback" not in log and " ERROR " not in log, log[-2000:]
    assert secret not in log, log[-2000:]


POST_JSON = f"POST {CHATBOT}/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
# Framings no client library would send, as (name, parts sent 0.2 s apart).
ODD_FRAMINGS: list[tuple[str, tuple[bytes, ...]]] = [
    ("bad chunk size", (f"{POST_JSON}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n".encode(),)),
    ("bad chunk size, late", (f"{POST_JSON}Transfer-Encoding: chunked\r\n\r\n".encode(), b"zz\r\n{}\r\n")),
    (
        "chunk longer than said",
        (f"{POST_JSON}Transfer-Encoding: chunked\r\n\r\n".encode(), b"2\r\n{}}}}\r\n"),
    ),
    (
        "undecodable deflate",
        (f"{POST_JSON}Content-Encoding: deflate\r\nContent-Length: 4\r\n\r\n".encode(), b"junk"),
    ),
    ("undecodable gzip", (f"{POST_JSON}Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\njunk".encode(),)),
    ("invalid Content-Length", (f"{POST_JSON}Content-Length: 1e3\r\n\r\n{{}}".encode(),)),
    ("negative Content-Length", (f"{POST_JSON}Content-Length: -2\r\n\r\n{{}}".encode(),)),
    ("two Content-Lengths", (f"{POST_JSON}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}".encode(),)),
    (
        "Content-Length and chunked",
        (f"{POST_JSON}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),),
    ),
    ("unknown Transfer-Encoding", (f"{POST_JSON}Transfer-Encoding: rot13\r\n\r\n{{}}".encode(),)),
    ("garbage bytes", (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\xff\r\n\r\n",)),
    ("HTTP/0.9 request line", (b"GET /health\r\n\r\n",)),
    ("unknown HTTP version", (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",)),
    ("lone CRs", (b"GET /health HTTP/1.1\rHost: x\r\r\n\r\n",)),
    ("CR inside a header", (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",)),
    ("NUL in the path", (b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n",)),
    ("header without a colon", (b"GET /health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",)),
]


async def test_odd_framings_get_no_5xx_and_no_error_line(server_process: StartServer) -> None:
    """Each odd framing is answered with a status below 500 (JSON when it is an error) or
    closed, at the latest by the client timeout; none is logged at ERROR."""
    process = server_process("--no-redis", "--client-timeout", str(CLIENT_TIMEOUT))
    answers = await asyncio.gather(
        *(raw_exchange(process.port, *parts, pause=0.2, timeout=ANSWER_TIMEOUT) for _, parts in ODD_FRAMINGS)
    )
    seen = {name: answer.status for (name, _), answer in zip(ODD_FRAMINGS, answers, strict=True)}
    assert all(status is None or status < 500 for status in seen.values()), seen
    for (name, _), answer in zip(ODD_FRAMINGS, answers, strict=True):
        if answer.status is not None and answer.status >= 400:
            assert answer.headers["content-type"].startswith("application/json"), (name, answer)
            assert answer.json()["error"]["code"], (name, answer)
    async with aiohttp.ClientSession() as http:
        assert (await health(http, process.url))["status"] == "ok"
    await asyncio.sleep(0.3)
    log = process.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
