"""Choosing and opening the broker and session store: Redis when it answers, memory otherwise,
and Redis again as soon as it answers."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from app.domain.agents import AgentRegistry, MemoryAgentRegistry
from app.domain.agents.fallback import StartupFallbackAgents
from app.domain.agents.redis import RedisAgentRegistry
from app.domain.queue_stats import MemoryServiceRate, RedisServiceRate, ServiceRate
from app.domain.routing.customers import CustomerPresence, MemoryCustomerPresence, RedisCustomerPresence
from app.domain.store import MemorySessionStore, RedisSessionStore, SessionStore, StoreUnavailable
from app.domain.store.fallback import StartupFallbackStore
from app.domain.typing_gate import MemoryTypingGate, RedisTypingGate, TypingGate
from app.process.settings import Settings
from realtime.broker import Broker
from realtime.cluster_broker import ClusterBroker
from realtime.command_pipe import CommandPipe
from realtime.memory_broker import MemoryBroker
from realtime.redis_broker import RedisBroker

logger = logging.getLogger(__name__)

POOL_SIZE = 64
DEFAULT_CAPACITY = Settings().agent_capacity
START_WAIT = 2.0


@dataclass(slots=True)
class Backends:
    broker: Broker
    store: SessionStore
    redis: Redis | RedisCluster | None = None
    # Agents' presence and capacity (docs/routing.md); in memory unless opened on Redis.
    agents: AgentRegistry = field(default_factory=lambda: MemoryAgentRegistry(DEFAULT_CAPACITY))
    # The queue's recent pace (the customers' wait estimates).
    service: ServiceRate = field(default_factory=MemoryServiceRate)
    # When each conversation's customer was last present (the router's --customer-idle).
    customers: CustomerPresence = field(default_factory=MemoryCustomerPresence)
    # One typing signal per sender per 2 s (docs/api.md, "Typing").
    typing: TypingGate = field(default_factory=MemoryTypingGate)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def degraded(self) -> bool:
        """Redis is configured but this process cannot use it right now."""
        if not self.broker.available:
            return True
        return isinstance(self.store, StartupFallbackStore) and not self.store.on_redis

    @property
    def mode(self) -> str:
        """What carries events now: "redis", "redis-cluster", or "memory" (by choice, or while
        one Redis is away; a cluster has no memory fallback: it stays "redis-cluster", and
        ``degraded`` says that a shard is away)."""
        return self.broker.mode

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.broker.close()
        await self.store.close()
        if self.redis is not None:
            await self.redis.aclose()


def redis_client(settings: Settings) -> Redis:
    # A blocking pool makes a burst of requests wait for a connection instead of failing with
    # "Too many connections" (the original design's failure past ~100 streams). Short connect
    # timeouts and few retries keep an outage answer (503) within settings.redis_timeout.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        timeout=settings.redis_timeout,
        socket_connect_timeout=min(1.0, settings.redis_timeout),
        socket_timeout=settings.redis_timeout,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 2),
    )
    return Redis.from_pool(pool)


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """``redis+cluster://[user:password@]host:port,host:port[/db]`` (or a plain redis://
    URL naming one node): the seed nodes, user and password."""
    rest = url.partition("://")[2].partition("/")[0]
    credentials, _, hosts = rest.rpartition("@")
    user, _, password = credentials.partition(":")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"not host:port in the Redis Cluster URL: {host_port!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, user or None, password or None


class WaitingRedisCluster(RedisCluster):
    """A cluster client whose commands wait for one of ``in_flight`` places. redis-py's raises
    MaxConnectionsError when every connection to a node is busy, where the single-Redis
    BlockingConnectionPool waits: a burst of stream opens on one shard then answered 503 (the
    benchmark found it). Pipelines do not pass here, so nodes get some connections more."""

    def __init__(self, *args: Any, in_flight: int, **kwargs: Any) -> None:
        kwargs["max_connections"] = 2 * in_flight
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(in_flight)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)


def cluster_clients(settings: Settings) -> tuple[RedisCluster, Callable[[str, int], Redis]]:
    """The cluster client (commands and scripts, routed by slot) and a maker of plain clients
    for each node's pub/sub connection. Few retries without backoff: redis-py's defaults
    (ten) would hold a request far past settings.redis_timeout on a failed node."""
    nodes, user, password = cluster_nodes(settings.redis_url)
    connect_timeout, socket_timeout = min(1.0, settings.redis_timeout), settings.redis_timeout
    cluster = WaitingRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=user,
        password=password,
        in_flight=POOL_SIZE,
        retry=Retry(NoBackoff(), 1),
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
    )

    def subscriber(host: str, port: int) -> Redis:
        return Redis(
            host=host,
            port=port,
            username=user,
            password=password,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
        )

    return cluster, subscriber


async def open_cluster_backends(settings: Settings) -> Backends:
    """On a Redis Cluster: sharded pub/sub, sessions on the shard of their hash tag. A
    cluster that cannot be reached at start stops the process (see ClusterBroker.start)."""
    cluster, subscriber = cluster_clients(settings)
    broker = ClusterBroker(cluster, subscriber, **redis_broker_options(settings))
    try:
        await broker.start(wait=settings.redis_timeout)
    except BaseException:
        await broker.close()
        await cluster.aclose()
        raise
    logger.info("broker and session store on a Redis Cluster of %d primaries", len(cluster.get_primaries()))
    store = redis_store(cluster, settings, broker)
    await _upgrade(store)
    service = RedisServiceRate(cluster, settings.namespace)
    customers = RedisCustomerPresence(cluster, settings.customer_idle, settings.namespace)
    typing = RedisTypingGate(cluster, settings.namespace)
    return Backends(
        broker, store, cluster, redis_agents(cluster, settings, broker), service, customers, typing
    )


def redis_agents(redis: Redis | RedisCluster, settings: Settings, broker: Broker) -> RedisAgentRegistry:
    """The agents on Redis, a status change and its event in one script (on the broadcast's
    slot, on a cluster too)."""
    return RedisAgentRegistry(
        redis,
        settings.agent_capacity,
        namespace=settings.namespace,
        events=broker.scripted_events(),
        timeout=settings.redis_timeout,
    )


def redis_store(redis: Redis | RedisCluster, settings: Settings, broker: Broker) -> RedisSessionStore:
    """The store on Redis, publishing each change's events in its own script, through
    ``broker``'s keys and bounds; on one Redis its hot path on a pipelined connection."""
    pipe = None
    if not isinstance(redis, RedisCluster):
        pipe = CommandPipe.for_url(
            settings.redis_url,
            timeout=settings.redis_timeout,
            connect_timeout=min(1.0, settings.redis_timeout),
        )
    return RedisSessionStore(
        redis,
        timeout=settings.redis_timeout,
        bounds=settings.bounds,
        namespace=settings.namespace,
        events=broker.scripted_events(),
        pipe=pipe,
    )


class BrokerOptions(TypedDict):
    queue_size: int
    history_maxlen: int
    history_ttl: float
    history_bytes: int
    subscribe_timeout: float
    namespace: str


def redis_broker_options(settings: Settings) -> BrokerOptions:
    """What a Redis or cluster broker (and the benchmark's baseline) takes from settings."""
    return {
        "queue_size": settings.queue_size,
        "history_maxlen": settings.history_size,
        "history_ttl": settings.history_ttl,
        "history_bytes": settings.history_bytes,
        "subscribe_timeout": settings.redis_timeout,
        "namespace": settings.namespace,
    }


async def open_backends(settings: Settings) -> Backends:
    if not settings.use_redis:
        logger.info("broker and session store in memory (Redis switched off)")
        memory = MemoryBroker(
            queue_size=settings.queue_size,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            history_bytes=settings.history_bytes,
        )
        agents = MemoryAgentRegistry(settings.agent_capacity, memory.publish)
        return Backends(memory, MemorySessionStore(settings.bounds, memory.publish), agents=agents)
    if settings.cluster:
        return await open_cluster_backends(settings)
    redis = redis_client(settings)
    broker = RedisBroker(redis, **redis_broker_options(settings))
    on_redis = redis_store(redis, settings, broker)
    where = _redacted(settings.redis_url)
    if await broker.start(wait=min(START_WAIT, settings.redis_timeout)):
        logger.info("broker and session store on Redis at %s", where)
        await _upgrade(on_redis)
        service = RedisServiceRate(redis, settings.namespace)
        customers = RedisCustomerPresence(redis, settings.customer_idle, settings.namespace)
        typing = RedisTypingGate(redis, settings.namespace)
        return Backends(
            broker, on_redis, redis, redis_agents(redis, settings, broker), service, customers, typing
        )
    logger.warning(
        "Redis at %s is unreachable: serving from memory, degraded (events do not cross "
        "processes); moving to Redis when it answers",
        where,
    )
    store = StartupFallbackStore(MemorySessionStore(settings.bounds, broker.publish), on_redis)
    memory_agents = MemoryAgentRegistry(settings.agent_capacity, broker.publish)
    fallback_agents = StartupFallbackAgents(memory_agents, redis_agents(redis, settings, broker), store)
    backends = Backends(
        broker,
        store,
        redis,
        fallback_agents,
        RedisServiceRate(redis, settings.namespace),
        RedisCustomerPresence(redis, settings.customer_idle, settings.namespace),
        RedisTypingGate(redis, settings.namespace),
    )
    task = asyncio.create_task(_move_to_redis(broker, store, where), name="move-to-redis")
    backends._tasks.add(task)
    return backends


async def _move_to_redis(broker: RedisBroker, store: StartupFallbackStore, where: str) -> None:
    """Once Redis answers, hand it the sessions this process kept in memory."""
    while not store.on_redis:
        await broker.wait_available()
        try:
            adopted = await store.move_to_redis()
        except StoreUnavailable as exc:
            logger.warning("could not move sessions to Redis yet: %s", exc)
            await asyncio.sleep(1.0)
            continue
        logger.info("moved to Redis at %s: %d sessions written from memory", where, adopted)


async def _upgrade(store: RedisSessionStore) -> None:
    """Data of an earlier version into this one's layout (a no-op once done). A failure is
    not fatal: the next start (or the move from memory) tries again."""
    try:
        await store.upgrade()
    except StoreUnavailable as exc:
        logger.warning("could not check the stored data's layout: %s", exc)


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
