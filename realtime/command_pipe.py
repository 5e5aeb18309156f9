"""One Redis connection for the hot commands, pipelined: every command issued in one turn of
the event loop leaves in one write, and the replies are matched to their callers in order.

The profile of an agent message put a quarter of the server's CPU in redis-py around one
EVALSHA (the pool's checkout and its semaphore, the retry wrapper, encoding each argument in
Python, a timeout per read; docs/benchmarks.md, profile). Redis answers the commands of one
connection in the order it received them, so a connection can carry any number of callers at
once: each gets a future, queued in order, and hiredis parses the replies as they arrive. Many
requests at once then cost one write and one read for all of them (auto-pipelining, as
ioredis and nchan do), and the cost per command is hiredis' ``pack_command`` and a future.

It speaks plain RESP2 over TCP with AUTH and SELECT (from the Redis URL); a URL it cannot
serve (TLS, a unix socket) leaves the hot path on redis-py (``CommandPipe.for_url`` says
None). Errors are redis-py's, so callers judge an outage as they already do: a lost
connection is ``ConnectionError`` for every command in flight (the next command connects
again), no answer within the timeout is ``TimeoutError`` and drops the connection (one timer
per connection watches the oldest command: no timeout object per command), and an error reply
is ``ResponseError``.
"""

import asyncio
import functools
import hashlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# What CLIENT LIST calls this connection (one per process).
CLIENT_NAME = "switchboard-pipe"


@dataclass(frozen=True, slots=True)
class PipeScript:
    """A Lua script run by its SHA1, loaded on first use and again after a SCRIPT FLUSH or a
    Redis restart (a NOSCRIPT reply)."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> "PipeScript":
        return cls(text, hashlib.sha1(text.encode()).hexdigest())


class _Connection(asyncio.Protocol):
    """The socket: commands out in order, replies in order to the oldest waiting future."""

    def __init__(self, timeout: float) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError)
        # The futures of the commands sent, oldest first, each with its deadline.
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._watch: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None  # why the connection ended, once it has

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's is not an asyncio.Transport subclass, but has its methods).
        self._transport = cast(asyncio.Transport, transport)

    def send(self, packed: bytes) -> "asyncio.Future[Any]":
        if self.lost is not None or self._transport is None:
            raise RedisConnectionError(f"Redis connection lost: {self.lost!r}")
        future: asyncio.Future[Any] = self._loop.create_future()
        deadline = self._loop.time() + self._timeout
        self._waiting.append((future, deadline))
        if self._watch is None:
            self._watch = self._loop.call_at(deadline, self._check_deadline)
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        return future

    def _check_deadline(self) -> None:
        """One timer for all commands in flight, not one per command: replies come in order,
        so only the oldest's deadline matters; past it the connection may be dead without
        knowing it, and every command on it fails."""
        self._watch = None
        if not self._waiting or self.lost is not None:
            return
        deadline = self._waiting[0][1]
        if self._loop.time() >= deadline:
            self.abort(RedisTimeoutError(f"no answer from Redis in {self._timeout} s"))
        else:
            self._watch = self._loop.call_at(deadline, self._check_deadline)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and self.lost is None and out:
            self._transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self.abort(RedisConnectionError("a reply from Redis that nothing asked for"))
                return
            future = self._waiting.popleft()[0]
            if future.done():
                continue  # its caller gave up (cancelled)
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis closed the connection: {exc!r}"))

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(exc)


class CommandPipe:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self._address = (host, port)
        self._setup: list[tuple[Any, ...]] = []
        if password is not None:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._setup.append(("SELECT", db))
        self._setup.append(("CLIENT", "SETNAME", CLIENT_NAME))
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def for_url(cls, url: str, *, timeout: float, connect_timeout: float) -> "CommandPipe | None":
        """A pipe to the Redis of ``url``, or None if it is not plain TCP (redis:// only)."""
        if not url.startswith("redis://"):
            return None
        try:
            parts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py's, untyped
        except ValueError:
            return None
        known = {"host", "port", "db", "username", "password"}
        if set(parts) - known or "host" not in parts:
            return None  # query options (timeouts, pool sizes...) are redis-py's to honour
        return cls(
            parts["host"],
            int(parts.get("port", 6379)),
            db=int(parts.get("db", 0)),
            username=parts.get("username"),
            password=parts.get("password"),
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    async def execute(self, *args: Any) -> Any:
        """One command's reply; raises redis-py's ConnectionError, TimeoutError or ResponseError."""
        connection = await self._connected()
        return await self._await(connection, connection.send(hiredis.pack_command(args)))

    async def run_script(self, script: PipeScript, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if Redis does not have it."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.execute(*command)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script.text)
            return await self.execute(*command)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.abort(RedisConnectionError("closed"))
            self._connection = None

    async def _await(self, connection: _Connection, future: "asyncio.Future[Any]") -> Any:
        try:
            return await future
        except RedisTimeoutError:
            if self._connection is connection:
                self._connection = None
            raise
        except ResponseError as exc:
            if str(exc).startswith("NOSCRIPT"):
                raise NoScriptError(str(exc)) from None
            raise

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.lost is None:
            return connection
        async with self._connecting:
            connection = self._connection
            if connection is not None and connection.lost is None:
                return connection
            self._connection = await self._connect()
            return self._connection

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    functools.partial(_Connection, self._timeout), *self._address
                )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {self._address}: {exc!r}") from exc
        for command in self._setup:
            try:
                await self._await(connection, connection.send(hiredis.pack_command(command)))
            except ResponseError:
                connection.abort(RedisConnectionError("setup refused"))
                raise
        logger.debug("command pipe connected to %s:%d", *self._address)
        return connection
