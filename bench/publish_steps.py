"""``python -m bench.publish_steps [--redis-url URL]``: the agent-message publish path
(``POST /workbench/api/sessions/{s}/messages``), step by step, then as whole HTTP requests.

In process, on the real backends (``app.backends.open_backends``) and a real redis-server, the
steps the handler takes are timed one after the other for a bounded number of requests, after a
warm-up: validation, store write, event building, broker publish, response (see STEPS). Then a
real server process (``bench.serve --insecure``) with no stream open takes closed-loop publish
requests from the benchmark's publisher process, one client and then several: requests/s,
p50 / p99, and the server's CPU per request, beside the steps' sum, so that what HTTP, aiohttp
and the middlewares add is visible. ``bench.run`` runs it after the matrix, on the same
redis-server; on its own it starts a redis-server unless given ``--redis-url`` (a development
Redis: it creates sessions there and announces their takeover on the broadcast channel; it
removes its keys and history entries afterwards, but for the shared event clock and status
counter).
"""

import argparse
import asyncio
import functools
import gc
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy
import redis

from bench.procs import CpuMeter, RedisProcess, ServerProcess
from bench.workers import Worker
from realtime.redis_replies import as_text
from tests.support.processes import ROOT

logger = logging.getLogger("bench.publish_steps")

WORK_DIR = ROOT / ".tmp" / "bench"
AGENT = "bench-agent"
CALL_MARGIN = 30.0

STEPS = (
    (
        "validation",
        (
            "the request checks and body, as the handler makes them: `require_agent`, "
            "`limit_actions`, `path_name`, `load_body` (JSON parse, the lone-surrogate check, the "
            "handler's `AgentMessageSchema` and its `load`), `acting_agent`, `checked_content`"
        ),
    ),
    (
        "action",
        (
            "`store.add_message(..., announce=...)` on a session the agent has taken over: "
            "the session as this process last wrote it (no GET), the rules, the `new_message` "
            "event built and validated (`envelope`, the plain check, orjson), then one script "
            "(`ACTION_SCRIPT`, on the command pipe): compare-and-set, transcript append and "
            "trim, and the event's id, history XADD with its trims and PUBLISH"
        ),
    ),
    ("response", "`json_answer` of the session and the message (built, not sent)"),
)


@dataclass(slots=True)
class Step:
    name: str
    mean_us: float
    p50_us: float
    p99_us: float
    cpu_us: float  # mean CPU time of this process in the step (wall minus waiting for Redis)
    share: float  # of the sum of the steps' means


@dataclass(slots=True)
class HttpLoad:
    """Closed-loop publish requests against a server process with no stream open."""

    clients: int
    seconds: float
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    server_cpu: float = 0.0  # % of one core
    server_cpu_us: float = 0.0  # server CPU time per request answered
    publisher_cpu: float = 0.0
    machine_cpu: float = 0.0


@dataclass(slots=True)
class PublishSteps:
    iterations: int = 0
    warmup: int = 0
    loop_seconds: float = 0.0
    steps: list[Step] = field(default_factory=list)
    total_p50_us: float = 0.0  # of each request's steps together
    total_p99_us: float = 0.0
    broker_publish_us: float = 0.0  # broker.publish as a whole (validation + script), mean
    broker_publish_p50_us: float = 0.0
    broker_publish_p99_us: float = 0.0
    http: list[HttpLoad] = field(default_factory=list)
    failure: str | None = None

    @property
    def total_us(self) -> float:
        return sum(s.mean_us for s in self.steps)

    @property
    def total_cpu_us(self) -> float:
        return sum(s.cpu_us for s in self.steps)


@dataclass(frozen=True, slots=True)
class Config:
    iterations: int = 2000
    warmup: int = 200
    loop_limit: float = 60.0  # seconds for the timed iterations, at most
    http_clients: tuple[int, ...] = (1, 16)
    http_seconds: float = 3.0
    http_warmup: float = 0.5


QUICK = Config(iterations=500, warmup=100, loop_limit=20.0, http_seconds=1.5, http_warmup=0.3)


class _Request:
    """What the handler's helpers read from an aiohttp request (no token: as under
    ``--insecure``), and nothing more."""

    def __init__(self, config: dict[Any, Any], name: str, body: bytes) -> None:
        self.config_dict = config
        self.match_info = {"session_name": name}
        self.content_type = "application/json"
        self._body = body

    async def read(self) -> bytes:
        return self._body


async def _time_steps(redis_url: str, name: str, config: Config) -> PublishSteps:
    # Imported here: bench.run's spawned load generators import nothing of the app.
    from app.backends import open_backends
    from app.domain.announcements import of_message
    from app.keys import SETTINGS
    from app.process.settings import Settings
    from app.web.answers import json_answer
    from handlers.access import acting_agent, limit_actions, require_agent
    from handlers.common import checked_content, load_body, path_name
    from handlers.workbench import AGENT_MESSAGE
    from realtime.channels import session_channel
    from realtime.events import envelope

    settings = Settings(redis_url=redis_url, insecure=True)
    backends = await open_backends(settings)
    try:
        if backends.redis is None or backends.mode != "redis":
            raise RuntimeError(f"Redis at {redis_url} is not in use (broker mode {backends.mode})")
        store, broker = backends.store, backends.broker
        await store.create(name)
        await store.apply(name, "takeover", agent_id=AGENT)
        config_dict: dict[Any, Any] = {SETTINGS: settings}
        channel = session_channel(name)
        announce = functools.partial(of_message, source="agent_workbench")  # as the workbench's
        wall = numpy.zeros((config.iterations, len(STEPS)), dtype=numpy.int64)
        cpu = numpy.zeros((config.iterations, len(STEPS)), dtype=numpy.int64)
        clock, cpu_clock = time.perf_counter_ns, time.process_time_ns

        async def one(i: int, row: int | None) -> None:
            body = json.dumps({"agent_id": AGENT, "content": f"t={time.time():.6f} n={i}"}).encode()
            request: Any = _Request(config_dict, name, body)
            marks = [(clock(), cpu_clock())]
            principal = require_agent(request)
            limit_actions(request, principal)
            session_name = path_name(request, "session_name")
            parsed = await load_body(request, AGENT_MESSAGE[False])
            agent_id = acting_agent(principal, parsed.get("agent_id"))
            content = checked_content(request, parsed["content"])
            marks.append((clock(), cpu_clock()))
            session, message = await store.add_message(
                session_name, "agent", content, agent_id=agent_id, announce=announce
            )
            marks.append((clock(), cpu_clock()))
            json_answer({"session": session, "message": message})
            marks.append((clock(), cpu_clock()))
            if row is not None:
                for k in range(len(STEPS)):
                    wall[row, k] = marks[k + 1][0] - marks[k][0]
                    cpu[row, k] = marks[k + 1][1] - marks[k][1]

        for i in range(config.warmup):
            await one(i, None)
        gc.collect()
        gc.freeze()  # as the server does after start-up
        started = time.monotonic()
        done = 0
        for done in range(config.iterations):
            if time.monotonic() - started > config.loop_limit:
                break
            await one(config.warmup + done, done)
        else:
            done = config.iterations
        result = PublishSteps(iterations=done, warmup=config.warmup, loop_seconds=time.monotonic() - started)
        wall_us, cpu_us = wall[:done] / 1000.0, cpu[:done] / 1000.0
        means = wall_us.mean(axis=0)
        totals = wall_us.sum(axis=1)
        result.total_p50_us, result.total_p99_us = (float(v) for v in numpy.percentile(totals, [50, 99]))
        for k, (step, _) in enumerate(STEPS):
            p50, p99 = numpy.percentile(wall_us[:, k], [50, 99])
            result.steps.append(
                Step(
                    step,
                    float(means[k]),
                    float(p50),
                    float(p99),
                    float(cpu_us[:, k].mean()),
                    float(means[k] / means.sum()),
                )
            )
        # Cross-check: broker.publish as the handler calls it (validation + script + bookkeeping).
        whole = []
        for i in range(min(done, 1000)):
            event = envelope(
                "new_message",
                {
                    "session_name": name,
                    "message": {
                        "id": f"m{i}",
                        "role": "agent",
                        "content": f"n={i}",
                        "agent_id": AGENT,
                        "created_at": int(time.time()),
                    },
                },
                "agent_workbench",
            )
            t0 = clock()
            await broker.publish(channel, event)
            whole.append(clock() - t0)
        if whole:
            result.broker_publish_us = float(numpy.mean(whole)) / 1000.0
            p50, p99 = numpy.percentile(whole, [50, 99]) / 1000.0
            result.broker_publish_p50_us, result.broker_publish_p99_us = float(p50), float(p99)
        return result
    finally:
        gc.unfreeze()
        await backends.close()


def measure_http(redis_url: str, name: str, config: Config, log_dir: Path) -> list[HttpLoad]:
    """Closed-loop publishes from the publisher process to a fresh server with no stream open."""
    server = ServerProcess("switchboard", redis_url, log_dir)
    publisher = Worker("publisher", "publisher-steps")
    loads = []
    try:
        server.start()
        publisher.start()
        sessions = [name]
        setup = publisher.call("setup", 60.0, base_url=server.url, sessions=sessions)
        if setup["errors"]:
            raise RuntimeError(f"session setup failed: {setup['errors']}")
        base = 0
        # Warm-up (script loaded, pool connections open), not counted.
        warm = publisher.call(
            "publish",
            config.http_warmup + CALL_MARGIN,
            base_url=server.url,
            sessions=sessions,
            base=base,
            duration=config.http_warmup,
            rate=None,
            concurrency=max(config.http_clients),
        )
        base += warm["attempted"] + 1
        for clients in config.http_clients:
            pids = [server.pid, publisher.pid]
            before = CpuMeter.take(pids)
            out = publisher.call(
                "publish",
                config.http_seconds + CALL_MARGIN,
                base_url=server.url,
                sessions=sessions,
                base=base,
                duration=config.http_seconds,
                rate=None,
                concurrency=clients,
            )
            after = CpuMeter.take(pids)
            base += out["attempted"] + 1
            load = HttpLoad(clients, config.http_seconds, requests=len(out["ok"]), errors=out["errors"])
            load.requests_per_s = load.requests / max(out["end"] - out["start"], 1e-9)
            load.p50_ms, load.p99_ms = out["request_p50"] * 1000.0, out["request_p99"] * 1000.0
            load.server_cpu = after.percent_since(before, server.pid)
            load.publisher_cpu = after.percent_since(before, publisher.pid)
            load.machine_cpu = after.machine_percent_since(before)
            server_seconds = after.per_pid[server.pid] - before.per_pid[server.pid]
            load.server_cpu_us = server_seconds * 1e6 / max(load.requests, 1)
            loads.append(load)
            logger.info(
                "  HTTP, %d client(s): %.0f requests/s, p50 %.2f ms, p99 %.2f ms, server "
                "CPU %.0f%% (%.0f µs/request)",
                clients,
                load.requests_per_s,
                load.p50_ms,
                load.p99_ms,
                load.server_cpu,
                load.server_cpu_us,
            )
        if not server.alive():
            raise RuntimeError(f"the server exited during the run; see {server.log_path}")
    finally:
        publisher.stop()
        ended = server.stop()
        if ended:
            logger.warning("publish-steps server %s; see %s", ended, server.log_path)
    return loads


def measure(
    redis_url: str, config: Config = Config(), log_dir: Path = WORK_DIR / "logs", tag: str | None = None
) -> PublishSteps:
    """Both parts, on sessions named ``<tag>-...``; a failure is recorded in the result (the
    report says so), not raised."""
    tag = tag or new_tag()
    logger.info("publish path, step by step: %d requests in process, then HTTP", config.iterations)
    result = PublishSteps()
    try:
        result = asyncio.run(_time_steps(redis_url, f"{tag}-inproc", config))
        for step in result.steps:
            logger.info(
                "  %-10s mean %7.1f µs, p99 %7.1f µs, CPU %6.1f µs, %4.1f%%",
                step.name,
                step.mean_us,
                step.p99_us,
                step.cpu_us,
                100 * step.share,
            )
        result.http = measure_http(redis_url, f"{tag}-http", config, log_dir)
    except (RuntimeError, OSError, EOFError, redis.exceptions.RedisError) as exc:
        logger.warning("publish path measurement failed: %s", exc)
        result.failure = f"{type(exc).__name__}: {exc}"
    return result


def new_tag() -> str:
    return f"steps{int(time.time() * 1000) % 10**8}"


def cleanup(redis_url: str, tag_prefix: str) -> None:
    """Remove the keys this tool made on someone else's Redis (sessions, transcripts,
    histories, status-set entries)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        for pattern in (
            f"session:{{{tag_prefix}*",
            f"messages:{{{tag_prefix}*",
            f"history:sse:session:{tag_prefix}*",
        ):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        for status in client.scan_iter(match="status:*", count=1000):
            members = [m for m in client.smembers(status) if as_text(m).startswith(tag_prefix)]
            if members:
                client.srem(status, *members)
        # The takeovers announced themselves on the broadcast channel, into its history.
        broadcast = "history:sse:broadcast"
        marker = f'"session_name":"{tag_prefix}'
        ours = [
            entry_id
            for entry_id, fields in client.xrevrange(broadcast, count=1000) or ()
            if entry_id is not None and fields and marker in as_text(fields.get(b"d", b""))
        ]
        if ours:
            client.xdel(broadcast, *ours)
        if client.exists(broadcast) and client.xlen(broadcast) == 0:
            client.delete(broadcast)
    finally:
        client.close()


# ---------------------------------------------------------------------- report section


def markdown(result: PublishSteps | None) -> str:
    """The report's section on the publish path."""
    head = ["## Publish path, step by step\n"]
    if result is None:
        return head[0] + "\nNot measured in this run.\n"
    if result.failure and not result.steps:
        return head[0] + f"\nFailed: {result.failure}\n"
    lines = [
        *head,
        (
            f"`python -m bench.publish_steps` (also run by `make bench` after the matrix, on the same "
            f"redis-server): the steps of `POST /workbench/api/sessions/{{s}}/messages` "
            f"(`handlers/workbench.py` `agent_message`), timed in process on the real backends "
            f"(`open_backends(Settings(redis_url=..., insecure=True))`), one request after the other, "
            f"over {result.iterations:,} requests after {result.warmup:,} of warm-up "
            f"({result.loop_seconds:.1f} s). Wall time includes the Redis round trips over loopback; "
            "CPU is this process's own time in the step (the rest of the wall time is waiting for Redis).\n"
        ),
        "| step | what it does | mean µs | p50 µs | p99 µs | CPU µs | share of the sum |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    what = dict(STEPS)
    for s in result.steps:
        lines.append(
            f"| {s.name} | {what[s.name]} | {s.mean_us:,.1f} | {s.p50_us:,.1f} | "
            f"{s.p99_us:,.1f} | {s.cpu_us:,.1f} | {100 * s.share:.1f}% |"
        )
    lines.append(
        f"| **all steps** (p50 / p99 of each request's sum) | | **{result.total_us:,.1f}** | "
        f"**{result.total_p50_us:,.1f}** | **{result.total_p99_us:,.1f}** | "
        f"**{result.total_cpu_us:,.1f}** | 100% |"
    )
    event = next((s for s in result.steps if s.name == "event"), None)
    publish = next((s for s in result.steps if s.name == "publish"), None)
    if event and publish and result.broker_publish_us:
        lines.append(
            f"\nCross-check: `broker.publish` as the handler calls it (its validation and encoding, "
            f"the script, its bookkeeping), timed alone in a loop of its own: p50 "
            f"{result.broker_publish_p50_us:,.1f} µs (mean {result.broker_publish_us:,.1f}, p99 "
            f"{result.broker_publish_p99_us:,.1f}), against {event.p50_us + publish.p50_us:,.1f} µs "
            "for the p50s of the event and publish steps above."
        )
    lines += _http_lines(result)
    if result.failure:
        lines.append(f"\nFailed part way: {result.failure}")
    return "\n".join(lines) + "\n"


def _http_lines(result: PublishSteps) -> list[str]:
    if not result.http:
        return []
    lines = [
        (
            "\nThe whole request, over HTTP: a fresh server process (`python -m bench.serve --insecure`) "
            "with **no stream open**, closed-loop publish requests from the publisher process (aiohttp, "
            f"each client sending its next request when the last was answered, {result.http[0].seconds:g} s "
            "per row), one session taken over once.\n"
        ),
        (
            "| clients | requests/s | p50 ms | p99 ms | server CPU % | server CPU µs per request | "
            "publisher CPU % | machine CPU % | errors |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for h in result.http:
        errors = ", ".join(f"{n:,} × {e}" for e, n in h.errors.items()) or "none"
        lines.append(
            f"| {h.clients} | {h.requests_per_s:,.0f} | {h.p50_ms:.2f} | {h.p99_ms:.2f} | "
            f"{h.server_cpu:.0f} | {h.server_cpu_us:,.0f} | {h.publisher_cpu:.0f} | "
            f"{h.machine_cpu:.0f} | {errors} |"
        )
    one = next((h for h in result.http if h.clients == 1), None)
    busiest = max(result.http, key=lambda h: h.clients)
    lines.append("\nWhat HTTP, aiohttp and the middlewares add:\n")
    if one is not None:
        http_cpu = one.server_cpu_us - result.total_cpu_us
        lines += [
            (
                f"- latency, one client: a request takes {one.p50_ms * 1000:,.0f} µs (p50) end to end, "
                f"its steps {result.total_p50_us:,.0f} µs (p50): about "
                f"{one.p50_ms * 1000 - result.total_p50_us:,.0f} µs is the client, the loopback, and the "
                "server's HTTP parsing, routing, middlewares (error; shield: one more task per "
                "request), response writing and event-loop turns;"
            ),
            (
                f"- server CPU, one client (one request at a time, as the steps were timed): "
                f"{one.server_cpu_us:,.0f} µs per request, against {result.total_cpu_us:,.0f} µs in the "
                f"steps: about {http_cpu:,.0f} µs ({100 * http_cpu / max(one.server_cpu_us, 1e-9):.0f}% "
                "of the server's CPU per request) is spent around the handler;"
            ),
        ]
    if busiest is not one:
        limit = (
            f"at {busiest.server_cpu:.0f}% of a core, the server was the limit"
            if busiest.server_cpu >= 90
            else f"the server used {busiest.server_cpu:.0f}% of a core"
        )
        cheaper = one is not None and busiest.server_cpu_us < one.server_cpu_us
        lines.append(
            f"- {busiest.clients} clients: {busiest.requests_per_s:,.0f} requests/s, "
            f"{busiest.server_cpu_us:,.0f} µs of server CPU per request ({limit})"
            + (
                ": less per request than one at a time, since each turn of the event loop (epoll, "
                "callbacks) now serves several requests, in the steps and around them alike."
                if cheaper
                else "."
            )
        )
    if busiest.publisher_cpu >= 90:
        lines.append(
            f"- the publisher process used {busiest.publisher_cpu:.0f}% of a core: it may "
            "have set the pace ⚠."
        )
    return lines


# ---------------------------------------------------------------------- standalone


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.publish_steps", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--redis-url", help="a running Redis (redis://host:port/db); default: start one")
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter HTTP loads")
    parser.add_argument("--iterations", type=int, help="timed in-process requests [2000; quick 500]")
    parser.add_argument(
        "--out", type=Path, default=WORK_DIR / "publish_steps.md", help="markdown section [%(default)s]"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = QUICK if args.quick else Config()
    if args.iterations:
        config = Config(**{**asdict(config), "iterations": max(1, args.iterations)})
    own = None
    url = args.redis_url
    if url is None:
        own = RedisProcess(WORK_DIR / "redis")
        own.start()
        url = own.url
    tag = new_tag()
    try:
        result = measure(url, config, tag=tag)
    finally:
        if own is not None:
            own.stop()
        else:
            cleanup(url, tag + "-")
    text = markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(asdict(result), indent=1))
    print(text)


if __name__ == "__main__":
    main()
