"""Fixtures: a real redis-server (pytest-redis, started once per session on a free loopback
port and flushed before each test), settings for either backend, and the real app; and the
tiers: each test is marked by what it starts (setup.cfg lists the markers; ``make test-fast``
leaves the slow tiers out)."""

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_redis.executor import RedisExecutor
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.factory import create_app
from app.process.settings import Settings
from tests.support.app_server import (
    AppClient,
    MakeClient,
    ServeApp,
    cancels_handlers,
    close_watched,
    started_client,
)
from tests.support.processes import ServerProcess
from tests.support.processes import run_py as run_py_to_end
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

BACKENDS = ("memory", "redis")

# Tiers by what a test starts: a fixture that starts it marks every test using it...
FIXTURE_MARKERS = {
    "server_process": "processes",
    "run_py": "processes",
    "redis_cluster": "cluster",
    "cluster_url": "cluster",
}
# ...and a module that is all of one kind marks each of its tests.
MODULE_MARKERS = {
    "test_browser": ("browser", "processes"),
    "test_nginx": ("nginx", "processes"),
    "test_js_client": ("js", "processes"),
    "test_packaging": ("packaging", "processes"),
    "test_workers": ("workers", "processes"),
    "test_redis_cluster_harness": ("cluster",),
    # A bot service or an OpenAI-compatible endpoint as a real process beside the app.
    "test_webhook_bot": ("processes",),
    "test_openai_bot": ("processes",),
    "test_bot_race": ("processes",),
    "test_webhooks": ("processes",),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        fixtures = set(getattr(item, "fixturenames", ()))
        wanted = {marker for fixture, marker in FIXTURE_MARKERS.items() if fixture in fixtures}
        if module is not None:
            wanted.update(MODULE_MARKERS.get(module.__name__.rpartition(".")[2], ()))
        for marker in sorted(wanted):
            item.add_marker(marker)


@pytest.fixture
async def redis_url(redis_proc: RedisExecutor) -> str:
    url = f"redis://{redis_proc.host}:{redis_proc.port}/0"
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
    result: str = request.param
    return result


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """Settings for the parametrized backend; Redis tests get the suite's redis-server."""
    if backend == "redis":
        return Settings(port=0, redis_url=request.getfixturevalue("redis_url"), insecure=True)
    return Settings(port=0, use_redis=False, insecure=True)


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """``await serve_app(app)``: ``app`` behind a real test server that, like run.py, cancels a
    handler when its client leaves and bounds its stop (tests/support/app_server.py)."""
    served: list[AppClient] = []

    async def serve(app: web.Application) -> AppClient:
        client = await started_client(app)
        assert cancels_handlers(client), "the test server does not cancel handlers as run.py does"
        served.append(client)
        return client

    yield serve
    await close_watched(reversed(served))


@pytest.fixture
def make_client(serve_app: ServeApp) -> MakeClient:
    """``await make_client(settings, **changes)``: the real app, behind a real test server."""

    async def make(settings: Settings, **changes: Any) -> AppClient:
        return await serve_app(create_app(replace(settings, **changes)))

    return make


@pytest.fixture
async def client(make_client: MakeClient, settings: Settings) -> AppClient:
    return await make_client(settings)


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real ``run.py`` processes; every one is stopped by PID at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        process = ServerProcess(list(args), env=env, log_dir=tmp_path)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def run_py() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_py(*args, env=...)``: ``python run.py *args`` run to its end (a command, or a start
    that must be refused); a test that takes it is in the ``processes`` tier."""
    return run_py_to_end


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on loopback ports, started once for the session (2-5 s)."""
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The cluster, emptied: every primary flushed before the test."""
    for port in redis_cluster.ports:
        client = SyncRedis(host="127.0.0.1", port=port)
        try:
            client.flushall()
        finally:
            client.close()
    return redis_cluster.cluster_url
