"""The benchmark's nchan reference is fed what Switchboard's streams carry, and the harness
measures it like any other mode: every stream opens and gets every message (when Debian's
nginx and nchan module are installed)."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.domain.announcements import of_message
from app.domain.store.rules import new_message
from bench import nchan
from bench.procs import RedisProcess
from bench.publisher import AGENT
from bench.results import NCHAN
from bench.run import Plan, run_combination
from bench.sse_client import CONNECTED, CONTENT
from realtime.events import encode

SESSION = "b1234-n1000one-0"
CONTENT_TEXT = "t=1796392346.174000 n=12345"


def shape(value: Any) -> Any:
    """The keys of nested objects, values left out."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


def test_the_envelope_is_switchboards_event_for_the_message() -> None:
    """The body posted to nchan is the event Switchboard announces for an agent message:
    the same fields, the same size, and the receiver finds its number and send time."""
    session: Any = {"session_name": SESSION, "status": "agent_active", "agent_id": AGENT}
    message = new_message("agent", CONTENT_TEXT, AGENT)
    (_, switchboard), *_ = of_message(session, message, source="agent_workbench")
    ours = nchan.message_envelope(SESSION, CONTENT_TEXT)
    assert shape(json.loads(ours)) == shape(switchboard)
    assert len(ours) == len(encode(switchboard).encode())
    found = CONTENT.search(ours)
    assert found is not None and found[2] == b"12345"
    assert CONNECTED in nchan.connected_envelope(SESSION)


def test_the_configuration_has_every_field_filled(tmp_path: Path) -> None:
    text = nchan.render(4321, "redis://127.0.0.1:6399/0", tmp_path, tmp_path / "error.log")
    assert "{{" not in text
    assert "listen 127.0.0.1:4321" in text
    assert "nchan_redis_server redis://127.0.0.1:6399/0;" in text
    assert re.search(r"^worker_processes 1;$", text, re.MULTILINE)


@pytest.fixture
def bench_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.mark.nginx
@pytest.mark.processes
@pytest.mark.parametrize("layout", ["one", "per10"])
def test_the_harness_measures_nchan(bench_redis: RedisProcess, layout: str) -> None:
    """A short nchan combination, as the benchmark runs it: the streams open on the announced
    channels, and both loads reach every stream with nothing missing or doubled."""
    if not nchan.nchan_available():
        pytest.skip("nchan is not installed (apt-get install nginx libnginx-mod-nchan)")
    plan = Plan(fixed_seconds=0.5, max_seconds=0.5, drain=5.0, quiet=1.0, settle=0.1, max_concurrency=4)
    opened, loads = run_combination(NCHAN, 20, layout, bench_redis, plan, "t")
    assert opened.failure is None and opened.opened == 20
    assert opened.pubsub_connections == 1
    for load in loads:
        assert load.failure is None, load.failure
        assert load.published > 0 and not load.publish_errors
        assert load.deliveries == load.expected > 0
        assert (load.missing, load.duplicates, load.cut) == (0, 0, 0)
