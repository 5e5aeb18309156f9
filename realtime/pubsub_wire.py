"""The socket under a pub/sub connection (realtime.pubsub): commands out, replies handed over
as RESP gives them (``[b"message", channel, data]``, ``[b"pmessage", pattern, channel, data]``,
``[b"subscribe", channel, count]``...), one call per reply.

redis-py's PubSub cost the reader most of its CPU per message: ``get_message`` is an await, a
timeout, a retry wrapper and a dict per message (docs/architecture.md, "One reader": the
figures before and after). ``HiredisPubSub`` is a protocol on the socket instead, as
realtime.command_pipe is for commands: every chunk the socket gives is parsed at once by
hiredis and each reply is handed over from the same callback, with no await, timer or task
switch per message; the reader task only waits for the connection to fail or to fall quiet
(``pump``).

It speaks plain RESP2 over TCP with AUTH, SELECT and CLIENT SETNAME from the client's settings.
A client it cannot stand in for (TLS, a unix socket, RESP3, a credential provider) keeps
redis-py's PubSub behind the same interface (``RedisPyPubSub``; ``pubsub_wire`` picks). Errors
are redis-py's, so the reader judges them as it always has.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

OnReply = Callable[[list[Any]], None]
OnConnect = Callable[[], None]

PING_MESSAGE = "switchboard"
DEFAULT_TIMEOUT = 5.0


class PubSubWire(Protocol):
    """What PubSubConnection needs of its socket."""

    @property
    def heard(self) -> float:
        """When (time.monotonic) Redis last sent anything on this connection."""
        ...

    async def connect(self) -> None:
        """Connect unless connected; on a new connection, call ``on_connect`` (a new connection
        is subscribed to nothing: the caller subscribes again)."""

    async def pump(self, timeout: float) -> None:
        """Hand over what arrives for up to ``timeout`` seconds; raise if the connection is
        lost or Redis answered with an error."""

    async def send(self, command: str, *wires: str) -> None:
        """(S|P)SUBSCRIBE or (S|P)UNSUBSCRIBE; the confirmations arrive as replies."""

    async def ping(self) -> None: ...

    async def drop(self) -> None:
        """Abandon the connection (a dead one: no goodbye); the next ``connect`` makes another."""

    async def close(self) -> None: ...


# Makes the wire of a PubSubConnection: (client, on_reply, on_connect) -> the wire.
WireFactory = Callable[[Redis, OnReply, OnConnect], PubSubWire]


def pubsub_wire(client: Redis, on_reply: OnReply, on_connect: OnConnect) -> PubSubWire:
    """Our own socket if it can serve ``client``'s connections, else redis-py's PubSub."""
    wire = HiredisPubSub.for_client(client, on_reply, on_connect)
    return wire if wire is not None else RedisPyPubSub(client, on_reply, on_connect)


def _pack(*args: Any) -> bytes:
    packed: bytes = hiredis.pack_command(args)
    return packed


class _Socket(asyncio.Protocol):
    """One connection: replies parsed as each chunk arrives; the first ones answer the setup
    commands (in order), the rest are pub/sub replies for ``on_reply``."""

    def __init__(self, on_reply: OnReply) -> None:
        self._parser = hiredis.Reader(replyError=ResponseError)
        self._on_reply = on_reply
        self._requests: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None  # the pump's, while it waits
        self.closed: asyncio.Future[None] = self._loop.create_future()  # the socket is closed
        self.heard = time.monotonic()
        self.lost: Exception | None = None  # why the connection ended, once it has
        self.refused: ResponseError | None = None  # an error reply, for the pump to raise

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's is not an asyncio.Transport subclass, but has its methods).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        parser, on_reply = self._parser, self._on_reply
        parser.feed(data)
        while True:
            try:
                reply = parser.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if self._requests:
                self._answer(self._requests.popleft(), reply)
            elif type(reply) is list:
                on_reply(reply)
            elif isinstance(reply, ResponseError):
                self.refused = reply
                self._wake()
            # else: PING's answer outside subscribed mode; it was traffic all the same

    def _answer(self, request: "asyncio.Future[Any]", reply: Any) -> None:
        if request.done():
            return
        if isinstance(reply, ResponseError):
            request.set_exception(reply)
        else:
            request.set_result(reply)

    def send(self, packed: bytes) -> None:
        if self.lost is not None or self._transport is None:
            raise RedisConnectionError(f"Redis pub/sub connection lost: {self.lost!r}")
        self._transport.write(packed)

    def request(self, packed: bytes) -> "asyncio.Future[Any]":
        """A command whose reply is an answer, not a pub/sub reply (before any SUBSCRIBE)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self.send(packed)
        self._requests.append(future)
        return future

    async def wait(self, timeout: float) -> None:
        if self.lost is None and self.refused is None:
            self._waiter = self._loop.create_future()
            try:
                await asyncio.wait((self._waiter,), timeout=timeout)
            finally:
                self._waiter = None
        if self.lost is not None:
            raise self.lost
        refused, self.refused = self.refused, None
        if refused is not None:
            raise refused

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis closed the pub/sub connection: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        while self._requests:
            request = self._requests.popleft()
            if not request.done():
                request.set_exception(exc)
        self._wake()


class HiredisPubSub:
    """A pub/sub connection on our own socket (see the module's docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        on_reply: OnReply,
        on_connect: OnConnect,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        client_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._address = (host, port)
        self._on_reply = on_reply
        self._on_connect = on_connect
        self._setup: list[tuple[Any, ...]] = []
        if password is not None:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._setup.append(("SELECT", db))
        if client_name:
            self._setup.append(("CLIENT", "SETNAME", client_name))
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._socket: _Socket | None = None

    @classmethod
    def for_client(cls, client: Redis, on_reply: OnReply, on_connect: OnConnect) -> "HiredisPubSub | None":
        """The wire to the Redis ``client`` connects to, or None if its connections are not
        plain RESP2 over TCP with a fixed password (those stay with redis-py)."""
        pool = client.connection_pool
        if pool.connection_class is not Connection:
            return None  # TLS, a unix socket, or a connection class of someone's own
        options: dict[str, Any] = pool.connection_kwargs
        if options.get("protocol") not in (None, 2, "2"):
            return None
        if options.get("credential_provider") is not None or options.get("redis_connect_func") is not None:
            return None
        return cls(
            options.get("host", "localhost"),
            int(options.get("port", 6379)),
            on_reply,
            on_connect,
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
            client_name=options.get("client_name"),
            timeout=options.get("socket_timeout") or DEFAULT_TIMEOUT,
            connect_timeout=options.get("socket_connect_timeout") or DEFAULT_TIMEOUT,
        )

    @property
    def heard(self) -> float:
        return self._socket.heard if self._socket is not None else 0.0

    async def connect(self) -> None:
        if self._socket is not None and self._socket.lost is None:
            return
        self._socket = None
        loop = asyncio.get_running_loop()
        on_reply = self._on_reply
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, sock = await loop.create_connection(lambda: _Socket(on_reply), *self._address)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {self._address}: {exc!r}") from exc
        for command in self._setup:
            try:
                async with asyncio.timeout(self._timeout):
                    await sock.request(_pack(*command))
            except BaseException as exc:
                sock.abort(RedisConnectionError("pub/sub connection setup failed"))
                if isinstance(exc, TimeoutError):
                    raise RedisTimeoutError(f"Redis did not answer {command[0]} in time") from exc
                if isinstance(exc, ResponseError):
                    refused = AuthenticationError if command[0] == "AUTH" else RedisConnectionError
                    raise refused(f"Redis refused {command[0]} on the pub/sub connection: {exc}") from exc
                raise
        self._socket = sock
        logger.debug("pub/sub connected to %s:%d", *self._address)
        self._on_connect()

    async def pump(self, timeout: float) -> None:
        await self._connected().wait(timeout)

    async def send(self, command: str, *wires: str) -> None:
        self._connected().send(_pack(command, *wires))

    async def ping(self) -> None:
        self._connected().send(_pack("PING", PING_MESSAGE))

    async def drop(self) -> None:
        if self._socket is not None:
            self._socket.abort(RedisConnectionError("pub/sub connection dropped"))

    async def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.abort(RedisConnectionError("pub/sub connection closed"))
            # The transport closes its socket on the next loop iteration: wait for it, so a
            # loop closed right after this leaves no socket open.
            await asyncio.wait((sock.closed,), timeout=1.0)

    def _connected(self) -> _Socket:
        sock = self._socket
        if sock is None:
            raise RedisConnectionError("Redis pub/sub not connected")
        if sock.lost is not None:
            raise sock.lost
        return sock


class RedisPyPubSub:
    """redis-py's PubSub behind the same interface, for the clients HiredisPubSub cannot serve:
    one ``get_message`` per reply, turned back into the reply's list."""

    def __init__(self, client: Redis, on_reply: OnReply, on_connect: OnConnect) -> None:
        self._pubsub = client.pubsub()
        self._on_reply = on_reply
        self._on_connect = on_connect
        self.heard = 0.0
        pubsub = self._pubsub
        self._commands: dict[str, Callable[..., Awaitable[Any]]] = {
            "SUBSCRIBE": pubsub.subscribe,
            "UNSUBSCRIBE": pubsub.unsubscribe,
            "PSUBSCRIBE": pubsub.psubscribe,
            "PUNSUBSCRIBE": pubsub.punsubscribe,
            "SSUBSCRIBE": pubsub.ssubscribe,
            "SUNSUBSCRIBE": pubsub.sunsubscribe,
        }

    async def connect(self) -> None:
        if self._pubsub.connection is not None:
            await self._pubsub.connect()  # reconnects if needed, calling _connected
            return
        await self._pubsub.connect()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.connect unannotated
        connection = self._pubsub.connection
        assert connection is not None
        # Reconnecting is the reader's job: redis-py retrying inside a read would reconnect
        # behind its back, and the re-subscription would wait for the next read timeout.
        connection.retry = Retry(NoBackoff(), 0)
        # Re-subscribing is the reader's too: redis-py's own would answer SUBSCRIBEs nobody
        # waits for, which confirmations could be mistaken for.
        connection.deregister_connect_callback(self._pubsub.on_connect)
        connection.register_connect_callback(self._connected)
        self._on_connect()

    def _connected(self, connection: object) -> None:
        """Called by redis-py whenever it (re)establishes the connection."""
        self._on_connect()

    async def pump(self, timeout: float) -> None:
        message = await self._pubsub.get_message(timeout=timeout)
        if message is None:
            return
        self.heard = time.monotonic()
        kind = message["type"]
        if kind == "pmessage":
            self._on_reply([b"pmessage", message["pattern"], message["channel"], message["data"]])
        else:
            self._on_reply([kind.encode(), message["channel"], message["data"]])

    async def send(self, command: str, *wires: str) -> None:
        await self._commands[command](*wires)

    async def ping(self) -> None:
        await self._pubsub.ping(PING_MESSAGE)

    async def drop(self) -> None:
        connection = self._pubsub.connection
        if connection is not None:
            await connection.disconnect(nowait=True)

    async def close(self) -> None:
        await self._pubsub.aclose()
