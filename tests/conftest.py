"""Fixtures: a real redis-server (pytest-redis, started once per session on a free loopback
port and flushed before each test), settings for either backend, and the real app."""

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.factory import create_app
from app.process.settings import Settings
from tests.processes import ServerProcess
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer

BACKENDS = ("memory", "redis")


@pytest.fixture
async def redis_url(redis_proc: object) -> str:
    url = f"redis://{redis_proc.host}:{redis_proc.port}/0"  # type: ignore[attr-defined]
    client = Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """Settings for the parametrized backend; Redis tests get the suite's redis-server."""
    if backend == "redis":
        return Settings(port=0, redis_url=request.getfixturevalue("redis_url"), insecure=True)
    return Settings(port=0, use_redis=False, insecure=True)


@pytest.fixture
def make_client(aiohttp_client: Callable[..., object]) -> Callable[..., object]:
    """``await make_client(settings, **changes)``: the real app, behind a real test server."""

    async def make(settings: Settings, **changes: object) -> TestClient:
        return await aiohttp_client(create_app(replace(settings, **changes)))  # type: ignore[misc, no-any-return]

    return make


@pytest.fixture
async def client(make_client: Callable[..., object], settings: Settings) -> TestClient:
    return await make_client(settings)  # type: ignore[misc, no-any-return]


@pytest.fixture
def server_process(tmp_path: object) -> "Callable[..., ServerProcess]":
    """Start real ``run.py`` processes; every one is stopped by PID at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        process = ServerProcess(list(args), env=env, log_dir=tmp_path)  # type: ignore[arg-type]
        started.append(process)
        process.start()
        return process

    yield start  # type: ignore[misc]
    for process in started:
        process.stop()


@pytest.fixture
def redis_server(tmp_path: object) -> "Iterator[RedisServer]":
    """A redis-server of this test's own, which the test may kill and restart."""
    server = RedisServer(tmp_path / "redis")  # type: ignore[operator]
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> "Iterator[RedisCluster]":
    """A 3-master Redis Cluster on loopback ports, started once for the session (2-5 s)."""
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: "RedisCluster") -> str:
    """The cluster, emptied: every primary flushed before the test."""
    for port in redis_cluster.ports:
        client = SyncRedis(host="127.0.0.1", port=port)
        try:
            client.flushall()
        finally:
            client.close()
    return redis_cluster.cluster_url
