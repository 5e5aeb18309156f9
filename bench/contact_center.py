"""``python -m bench.contact_center [--quick] [--workers 1,2] [--conversations N] [--agents A]``:
the contact-center scenario, also run by ``make bench`` after the matrix (bench.run).

The matrix fans one channel out to many streams; a contact center is the other shape: many
small conversations, each watched by its customer and by the agent holding it, and an agent
watching many. So: N conversations (5,000), each taken over by one of A agents (50, so 100
each), one customer stream per conversation and one stream per agent, and messages from
customers and agents at a Poisson rate R to uniformly random conversations. A customer's
message is due on its conversation's customer stream and on its agent's stream, an agent's
on the customer stream only. Latency runs from each message's *scheduled* send time to its
arrival on each stream that should get it (open loop: a publisher that falls behind shows
up as latency rather than hiding it). R rises step by step until a step fails (p99 ≥ 100 ms,
the original design's target, a missing delivery, an HTTP error, or under 95 % of R sent);
1,000/s always runs, for its p99. Each server configuration (one process, ``--workers 2``)
gets a fresh server (``run.py`` itself, limits lifted) and a flushed Redis.

Alone, the module starts its own redis-server (or uses ``--redis-url``, which it never
flushes: names are then unique per run and the connection counts include other clients) and
writes ``docs/benchmarks-contact-center.md`` (``--quick``: ``.tmp/bench/quick/``; raw figures
in ``.tmp/bench/contact-center/results.json``, or beside the report with ``--out``/``--quick``).
Everything runs on 127.0.0.1; every process is stopped by its PID; every wait is bounded.

One receiver process suffices (it parses frames with a regular expression, and used about a
tenth of a core at the highest steps, a fraction of the publisher's cost); ``--receivers 2``
spreads the streams over two. The machine is shared, so a step waits for the rest of it to be
quiet and a step failing while it was not runs once more; and since a step's p99 turned out
to hinge on the server's full garbage collections, those are logged (bench/gc_watch) and
shown beside each step.
"""

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy
import redis

from bench.procs import (
    ROOT,
    SERVER_LIMITS_LIFTED,
    CpuMeter,
    RedisProcess,
    ServerProcess,
    children,
    raise_open_files_limit,
    redis_connections,
    rss_kib,
)
from bench.publisher import CUSTOMER, REQUEST_TIMEOUT
from bench.results import latency_percentiles
from bench.workers import Worker, call_all
from tests.support.processes import HOST

logger = logging.getLogger(__name__)

WORK_DIR = ROOT / ".tmp" / "bench" / "contact-center"
CALL_MARGIN = 30.0  # beyond a command's own bound, before the harness gives up on a worker
SETUP_SECONDS_PER_CONVERSATION = 0.02  # a generous bound on creating and taking one over
SEQ_BLOCK = 10**8  # sequence numbers of one step: warm-up from k·SEQ_BLOCK, measured from + WARM_SPAN
WARM_SPAN = 10**7
GC_WATCH = ROOT / "bench" / "gc_watch"  # its sitecustomize.py logs long collections
GC_MIN_MS = 10.0
GIVE_UP = 10.0  # a publisher this far behind its schedule stops sending (the step then fails)
WORKER_POLL = 0.1
# This machine is shared (other test runs come and go): a step starts once the rest of the
# machine is quiet, and a step that fails while it was not runs once more.
QUIET_CPU = 30.0  # % of a core busy outside the scenario's processes, below which it is quiet
QUIET_WAIT = 60.0  # longest wait for quiet before a step (then it runs anyway)
NOISY_CPU = 50.0  # % of a core busy elsewhere during a failing step that earns it a second try
MAX_RETRIES = 3  # second tries per configuration
WORKER_POLLS = 200  # at most 20 s for every worker of --workers N to serve


@dataclass(frozen=True, slots=True)
class Plan:
    """The scenario's sizes, steps and durations."""

    conversations: int = 5000
    agents: int = 50
    rates: tuple[float, ...] = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000)
    workers: tuple[int, ...] = (1, 2)
    warmup: float = 2.0  # seconds at R before the measured window
    seconds: float = 10.0  # the measured window
    drain: float = 10.0  # longest wait for the last deliveries after publishing ends
    quiet: float = 3.0  # ... or for this long without any delivery
    settle: float = 1.0  # idle time before RSS is read, and between steps
    receivers: int = 1
    setup_at_once: int = 50  # conversations being created and taken over at once
    open_at_once: int = 100  # streams being opened at once (the listen backlog is 128)
    in_flight: int = 1024  # publisher requests awaiting their answer, at most
    target_p99_ms: float = 100.0
    reference_rate: float = 1000.0  # always measured, for its p99
    min_achieved: float = 0.95  # of R, for a step to pass
    gc_watch: bool = True  # log the server's long garbage collections (bench/gc_watch)
    quick: bool = False

    def open_timeout(self) -> float:
        return max(30.0, (self.conversations + self.agents) / 80)


QUICK = Plan(
    conversations=500,
    agents=5,
    rates=(250, 500, 1000, 2000),
    warmup=1.0,
    seconds=2.0,
    drain=5.0,
    quiet=1.5,
    settle=0.5,
    quick=True,
)


@dataclass(frozen=True, slots=True)
class Run:
    """A plan and what came of it, as bench.run hands them to its report."""

    plan: Plan
    results: list["ConfigResult"]


class RedisLike(Protocol):
    """What the scenario needs of its Redis (bench.procs.RedisProcess, or ExternalRedis)."""

    @property
    def url(self) -> str: ...
    @property
    def pids(self) -> list[int]: ...
    def flush(self) -> None: ...
    def connections(self) -> tuple[int, int]: ...


class ExternalRedis:
    """A Redis this harness did not start (``--redis-url``): never flushed, no CPU measured."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pids: list[int] = []

    def flush(self) -> None:
        """Not ours to empty: the run's names are unique instead."""

    def connections(self) -> tuple[int, int]:
        with redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=10) as client:
            return redis_connections(client)


@dataclass(slots=True)
class StepResult:
    """One rate held on the open streams."""

    rate: float
    attempted: int = 0
    sent_ok: int = 0
    achieved: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    expected: int = 0
    deliveries: int = 0
    missing: int = 0
    duplicates: int = 0
    unexpected: int = 0
    stale: int = 0
    cut: int = 0
    ended: str = ""  # how the wait for the last deliveries ended (complete, quiet, deadline)
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    lag_p99_ms: float = 0.0  # how late the publisher sent, against the schedule
    lag_max_ms: float = 0.0
    request_p50_ms: float = 0.0
    request_p99_ms: float = 0.0
    server_cpu: float = 0.0
    redis_cpu: float = 0.0
    publisher_cpu: float = 0.0
    receiver_cpu: list[float] = field(default_factory=list)
    machine_cpu: float = 0.0
    failure: str | None = None  # the step could not be measured
    busy_before: float = 0.0  # % of a core busy elsewhere just before the step
    # The serving processes' garbage collections of GC_MIN_MS or more, from the measured
    # window's start to the end of the wait for deliveries (None: not watched).
    gc_pauses: int | None = None
    gc_longest_ms: float = 0.0
    gc_total_ms: float = 0.0
    retried_after: str | None = None  # how a first, noisy try failed

    @property
    def other_cpu(self) -> float:
        """The machine's CPU outside the scenario's processes: the kernel's loopback work and
        whatever else runs (much of it says the figures are noisy)."""
        mine = self.server_cpu + self.redis_cpu + self.publisher_cpu + sum(self.receiver_cpu)
        return max(0.0, self.machine_cpu - mine)

    def problems(self, plan: Plan) -> list[str]:
        """Why the step fails (empty: it passes)."""
        if self.failure:
            return [self.failure]
        found = []
        if self.p99_ms >= plan.target_p99_ms:
            found.append(f"p99 {self.p99_ms:,.0f} ms")
        if self.missing:
            found.append(f"{self.missing:,} missing")
        if self.errors:
            found.append(f"{sum(self.errors.values()):,} HTTP errors")
        if self.achieved < plan.min_achieved * self.rate:
            found.append(f"sent {self.achieved:,.0f}/s")
        if not self.deliveries:
            found.append("no delivery")
        return found


@dataclass(slots=True)
class ConfigResult:
    """One server configuration: its setup, its idle streams, then the steps."""

    workers: int
    conversations: int
    agents: int
    receivers: int
    setup_seconds: float = 0.0
    streams: int = 0
    opened: int = 0
    open_seconds: float = 0.0
    open_errors: dict[str, int] = field(default_factory=dict)
    rss_fresh_kib: int = 0  # the server just started
    rss_before_kib: int = 0  # conversations created and taken over
    rss_after_kib: int = 0  # and every stream open
    rss_end_kib: int = 0  # after the last step
    redis_connections: int | None = None
    pubsub_connections: int | None = None
    steps: list[StepResult] = field(default_factory=list)
    failure: str | None = None
    stopped: str = ""

    @property
    def label(self) -> str:
        return "one process" if self.workers == 1 else f"`--workers {self.workers}`"

    def rss_per_conversation_kib(self) -> float | None:
        if self.failure or not self.rss_after_kib:
            return None
        return (self.rss_after_kib - self.rss_before_kib) / self.conversations

    def sustained(self, plan: Plan) -> StepResult | None:
        """The highest step passing, of those before the first failing one."""
        best = None
        for step in self.steps:
            if step.problems(plan):
                break
            best = step
        return best

    def at_rate(self, rate: float) -> StepResult | None:
        return next((s for s in self.steps if s.rate == rate), None)


class ContactCenterServer(ServerProcess):
    """``python run.py --workers W`` (the production entry point, for both configurations, so
    that they differ in the worker count only) on a free port, limits lifted."""

    def __init__(self, workers: int, redis_url: str, log_dir: Path, gc_log: Path | None = None) -> None:
        super().__init__(f"contact-center-w{workers}", redis_url, log_dir)
        self.workers = workers
        self.gc_log = gc_log
        if gc_log is not None:
            path = os.pathsep.join(p for p in (str(GC_WATCH), os.environ.get("PYTHONPATH", "")) if p)
            self.env = {"PYTHONPATH": path, "BENCH_GC_LOG": str(gc_log), "BENCH_GC_MIN_MS": str(GC_MIN_MS)}
        self.args = [
            sys.executable,
            str(ROOT / "run.py"),
            "--workers",
            str(workers),
            "--insecure",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--redis-url",
            redis_url,
            *SERVER_LIMITS_LIFTED,
        ]

    def start(self) -> None:
        if self.gc_log is not None:
            self.gc_log.mkdir(parents=True, exist_ok=True)
            for old in self.gc_log.glob("gc-*.log"):
                old.unlink()
        super().start()

    def gc_pauses(self, start: float, end: float) -> list[float] | None:
        """Milliseconds of each logged collection of the serving processes that began between
        ``start`` and ``end`` (unix times); None when not watched."""
        if self.gc_log is None:
            return None
        pauses = []
        for pid in self.serving_pids():
            try:
                lines = (self.gc_log / f"gc-{pid}.log").read_text().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                began, _generation, millis = line.split()
                if start <= float(began) <= end:
                    pauses.append(float(millis))
        return pauses

    def serving_pids(self) -> list[int]:
        """The processes that serve: the server itself, or the supervisor's workers."""
        if self.workers == 1:
            return [self.pid]
        return children(self.pid)

    def wait_for_workers(self) -> None:
        """Bounded: until every worker runs and /health has been answered by each."""
        if self.workers == 1:
            return
        seen: set[int] = set()
        for _ in range(WORKER_POLLS):
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    seen.add(int(json.loads(response.read())["pid"]))
            except (OSError, ValueError, KeyError):
                pass
            if len(seen) >= self.workers and len(children(self.pid)) == self.workers:
                return
            time.sleep(WORKER_POLL)
        raise RuntimeError(f"only {len(seen)} of {self.workers} workers answered /health")


@dataclass(slots=True)
class Rig:
    """The processes of one configuration, and its names."""

    server: ContactCenterServer
    publisher: Worker
    receivers: list[Worker]
    sessions: list[str]
    holders: list[str]  # the agent holding each session
    agents: list[str]

    def rss(self) -> int:
        return sum(rss_kib(pid) for pid in self.server.serving_pids())

    def loadgen_pids(self) -> list[int]:
        return [self.publisher.pid, *(w.pid for w in self.receivers)]


def run(plan: Plan, redis_server: RedisLike, log_dir: Path) -> list[ConfigResult]:
    """Every configuration of the plan, one after the other, each from a fresh server."""
    tag = f"cc{int(time.time()) % 100000}"
    results = []
    for workers in plan.workers:
        redis_server.flush()
        logger.info(
            "contact center, %s: %d conversations, %d agents",
            "one process" if workers == 1 else f"--workers {workers}",
            plan.conversations,
            plan.agents,
        )
        results.append(run_config(plan, workers, redis_server, log_dir, f"{tag}w{workers}"))
    redis_server.flush()
    return results


def run_config(plan: Plan, workers: int, redis_server: RedisLike, log_dir: Path, tag: str) -> ConfigResult:
    result = ConfigResult(workers, plan.conversations, plan.agents, plan.receivers)
    agents = [f"{tag}-a{a}" for a in range(plan.agents)]
    gc_log = log_dir.parent / "gc" / tag if plan.gc_watch else None
    rig = Rig(
        ContactCenterServer(workers, redis_server.url, log_dir, gc_log),
        Worker("publisher", "cc-publisher"),
        [Worker("receiver", f"cc-receiver-{i}") for i in range(plan.receivers)],
        [f"{tag}-c{c}" for c in range(plan.conversations)],
        [agents[c % plan.agents] for c in range(plan.conversations)],
        agents,
    )
    started = False
    try:
        rig.server.start()
        started = True
        rig.server.wait_for_workers()
        for worker in [rig.publisher, *rig.receivers]:
            worker.start()
        if prepare(rig, plan, redis_server, result):
            run_steps(rig, plan, redis_server, result)
            result.rss_end_kib = rig.rss() if rig.server.alive() else 0
    except (RuntimeError, OSError, EOFError) as exc:  # WorkerError is a RuntimeError
        result.failure = result.failure or f"failed: {exc}"
        logger.warning("  %s", result.failure)
    finally:
        for worker in [rig.publisher, *rig.receivers]:
            worker.stop()
        if started:
            result.stopped = rig.server.stop()
            if result.stopped:
                logger.warning("server %s; see %s", result.stopped, rig.server.log_path)
    return result


def prepare(rig: Rig, plan: Plan, redis_server: RedisLike, result: ConfigResult) -> bool:
    """Create the conversations, take each over by its agent, open every stream; RSS and
    Redis connections once idle. False if any of it failed (``result.failure`` says what)."""
    time.sleep(plan.settle)
    result.rss_fresh_kib = rig.rss()
    setup = rig.publisher.call(
        "setup",
        plan.conversations * SETUP_SECONDS_PER_CONVERSATION + CALL_MARGIN,
        base_url=rig.server.url,
        sessions=rig.sessions,
        agents=rig.holders,
        at_once=plan.setup_at_once,
    )
    result.setup_seconds = setup["seconds"]
    if setup["errors"]:
        result.failure = f"failed: conversation setup ({_describe(setup['errors'])})"
        return False
    logger.info("  %d conversations created and taken over in %.1f s", plan.conversations, setup["seconds"])
    time.sleep(plan.settle)
    result.rss_before_kib = rig.rss()
    commands = _open_commands(rig, plan)
    result.streams = plan.conversations + plan.agents
    answers = call_all(rig.receivers, "open", plan.open_timeout() + CALL_MARGIN, commands)
    result.opened = sum(a["opened"] for a in answers)
    result.open_seconds = max(a["seconds"] for a in answers)
    for answer in answers:
        for error, count in answer["errors"].items():
            result.open_errors[error] = result.open_errors.get(error, 0) + count
    if result.opened < result.streams:
        result.failure = f"failed: {result.opened:,} of {result.streams:,} streams opened ({_describe(result.open_errors)})"
        return False
    time.sleep(plan.settle)
    result.rss_after_kib = rig.rss()
    result.redis_connections, result.pubsub_connections = redis_server.connections()
    logger.info(
        "  opened %d streams in %.1f s; %.1f KiB RSS per conversation; %d Redis connections (%d pub/sub)",
        result.opened,
        result.open_seconds,
        result.rss_per_conversation_kib() or 0.0,
        result.redis_connections,
        result.pubsub_connections,
    )
    return True


def _open_commands(rig: Rig, plan: Plan) -> list[dict[str, Any]]:
    """Customer stream c listens as channel c, agent a's stream as channel N + a (the indexes
    the routes name); stream i is opened by receiver i mod R."""
    paths = [f"/chatbot/api/sessions/{name}/events" for name in rig.sessions]
    paths += [f"/workbench/api/agents/{agent}/events" for agent in rig.agents]
    commands: list[dict[str, Any]] = [
        {
            "host": HOST,
            "port": rig.server.port,
            "paths": [],
            "sessions": [],
            "timeout": plan.open_timeout(),
            "at_once": max(1, plan.open_at_once // len(rig.receivers)),
        }
        for _ in rig.receivers
    ]
    for i, path in enumerate(paths):
        command = commands[i % len(commands)]
        command["paths"].append(path)
        command["sessions"].append(i)
    return commands


def run_steps(rig: Rig, plan: Plan, redis_server: RedisLike, result: ConfigResult) -> None:
    """Rising rates until one fails, and at least up to the reference rate; a step failing
    while the machine was busy elsewhere is run once more (MAX_RETRIES at most)."""
    failed = False
    attempt = retries = 0
    pids = [*rig.server.serving_pids(), *rig.loadgen_pids(), *redis_server.pids]
    for rate in sorted(plan.rates):
        if failed and rate > plan.reference_rate:
            break
        first_try: str | None = None
        for _ in range(2):
            attempt += 1
            busy = wait_for_quiet(pids)
            step = run_step(rig, plan, redis_server, rate, attempt, seed=attempt + 1000 * rig.server.workers)
            step.busy_before, step.retried_after = busy, first_try
            problems = step.problems(plan)
            _log_step(step, problems)
            if not problems or step.other_cpu < NOISY_CPU or retries >= MAX_RETRIES or not rig.server.alive():
                break
            retries += 1
            first_try = f"{'; '.join(problems)}, {step.other_cpu:.0f}% of a core busy elsewhere"
            logger.info("  %s/s failed on a busy machine (%s): once more", f"{rate:,.0f}", first_try)
        result.steps.append(step)
        failed = failed or bool(problems)
        if not rig.server.alive():
            step.failure = "the server exited during the step"
            break


def busy_elsewhere(pids: list[int], seconds: float = 1.0) -> float:
    """CPU (% of one core) the machine spent outside ``pids`` over the next ``seconds``."""
    before = CpuMeter.take(pids)
    time.sleep(seconds)
    after = CpuMeter.take(pids)
    ours = sum(after.percent_since(before, pid) for pid in pids)
    return max(0.0, after.machine_percent_since(before) - ours)


def wait_for_quiet(pids: list[int]) -> float:
    """Bounded: until the rest of the machine is quiet (or QUIET_WAIT seconds); its last
    reading."""
    deadline = time.monotonic() + QUIET_WAIT
    busy = busy_elsewhere(pids)
    if busy >= QUIET_CPU:
        logger.info("  waiting for the machine to be quiet (%.0f%% of a core busy elsewhere)", busy)
    while busy >= QUIET_CPU and time.monotonic() < deadline:
        busy = busy_elsewhere(pids)
    return busy


def run_step(rig: Rig, plan: Plan, redis_server: RedisLike, rate: float, index: int, seed: int) -> StepResult:
    step = StepResult(rate)
    warm_base = index * SEQ_BLOCK
    base = warm_base + WARM_SPAN
    call_all(rig.receivers, "begin", CALL_MARGIN, [{"base": base}] * len(rig.receivers))
    server_pids = rig.server.serving_pids()
    pids = [*server_pids, *rig.loadgen_pids(), *redis_server.pids]
    before = CpuMeter.take(pids)
    sent = rig.publisher.call(
        "poisson",
        plan.warmup + plan.seconds + GIVE_UP + REQUEST_TIMEOUT + CALL_MARGIN,
        base_url=rig.server.url,
        sessions=rig.sessions,
        agents=rig.holders,
        warm_base=warm_base,
        base=base,
        rate=rate,
        warmup=plan.warmup,
        seconds=plan.seconds,
        seed=seed,
        in_flight=plan.in_flight,
        give_up=GIVE_UP,
    )
    after = CpuMeter.take(pids)
    routes = _routes(sent, plan)
    collect = {
        "base": base,
        "published": [],
        "sessions": plan.conversations + plan.agents,
        "drain": plan.drain,
        "quiet": plan.quiet,
        "routes": routes,
    }
    received = call_all(rig.receivers, "collect", plan.drain + CALL_MARGIN, [collect] * len(rig.receivers))
    pauses = rig.server.gc_pauses(sent["start"], time.time())
    if pauses is not None:
        step.gc_pauses, step.gc_longest_ms, step.gc_total_ms = (
            len(pauses),
            max(pauses, default=0.0),
            sum(pauses),
        )
    _fill_sent(step, sent)
    _fill_received(step, received)
    step.server_cpu = sum(after.percent_since(before, pid) for pid in server_pids)
    step.redis_cpu = sum(after.percent_since(before, pid) for pid in redis_server.pids)
    step.publisher_cpu = after.percent_since(before, rig.publisher.pid)
    step.receiver_cpu = [after.percent_since(before, w.pid) for w in rig.receivers]
    step.machine_cpu = after.machine_percent_since(before)
    return step


def _routes(sent: dict[str, Any], plan: Plan) -> bytes:
    """(sequence number, channel) for every delivery due: a message on its conversation's
    customer stream, a customer's message also on its agent's stream (agent = c mod A)."""
    seqs = numpy.frombuffer(sent["seq"], dtype=numpy.int64)
    conversations = numpy.frombuffer(sent["conversation"], dtype=numpy.int64)
    customer = numpy.frombuffer(sent["kind"], dtype=numpy.int64) == CUSTOMER
    agent_channels = plan.conversations + conversations[customer] % plan.agents
    pairs = numpy.concatenate(
        [numpy.column_stack([seqs, conversations]), numpy.column_stack([seqs[customer], agent_channels])]
    )
    return pairs.astype(numpy.int64).tobytes()


def _fill_sent(step: StepResult, sent: dict[str, Any]) -> None:
    step.attempted = sent["attempted"]
    step.sent_ok = sent["ok"]
    step.achieved = sent["achieved"]
    step.errors = sent["errors"]
    step.lag_p99_ms = sent["lag_p99"] * 1000.0
    step.lag_max_ms = sent["lag_max"] * 1000.0
    step.request_p50_ms = sent["request_p50"] * 1000.0
    step.request_p99_ms = sent["request_p99"] * 1000.0


def _fill_received(step: StepResult, received: list[dict[str, Any]]) -> None:
    for key in ("expected", "deliveries", "missing", "duplicates", "unexpected", "stale", "cut"):
        setattr(step, key, sum(r[key] for r in received))
    endings = {r["ended"] for r in received}
    step.ended = next((e for e in ("deadline", "quiet", "complete") if e in endings), "")
    samples = numpy.concatenate([numpy.frombuffer(r["latencies"], dtype=numpy.float64) for r in received])
    figures = latency_percentiles(samples)
    step.p50_ms, step.p90_ms = figures["p50_ms"], figures["p90_ms"]
    step.p99_ms, step.max_ms = figures["p99_ms"], figures["max_ms"]


def _log_step(step: StepResult, problems: list[str]) -> None:
    logger.info(
        "  %s/s: sent %s/s, p50 %.1f ms, p99 %.1f ms, max %.0f ms, missing %d, dup %d, errors %d, "
        "publisher lag p99 %.1f ms, CPU server %.0f%% redis %.0f%% publisher %.0f%% receivers %s%% "
        "elsewhere %.0f%%, GC pauses %s: %s",
        f"{step.rate:,.0f}",
        f"{step.achieved:,.0f}",
        step.p50_ms,
        step.p99_ms,
        step.max_ms,
        step.missing,
        step.duplicates,
        sum(step.errors.values()),
        step.lag_p99_ms,
        step.server_cpu,
        step.redis_cpu,
        step.publisher_cpu,
        "/".join(f"{c:.0f}" for c in step.receiver_cpu),
        step.other_cpu,
        _gc_cell(step),
        "; ".join(problems) or "pass",
    )


def _describe(errors: dict[str, int]) -> str:
    return (
        ", ".join(f"{count:,} × {error}" for error, count in sorted(errors.items(), key=lambda e: -e[1]))
        or "no error"
    )


# The report ------------------------------------------------------------------------------------


def markdown(results: list[ConfigResult] | None, plan: Plan, heading: str = "##") -> str:
    """The scenario's section of docs/benchmarks.md (or its own file's body)."""
    title = f"{heading} Contact center: {plan.conversations:,} conversations, {plan.agents} agents\n"
    if results is None:
        return title + "\nNot measured in this run.\n"
    sub = heading + "#"
    parts = [title, _method(plan), _headline(results, plan)]
    for result in results:
        heading_label = result.label[:1].upper() + result.label[1:]
        parts.append(f"{sub} {heading_label}\n\n{_config_line(result)}\n\n{_step_table(result, plan)}")
    parts.append(_notes(results, plan))
    return "\n".join(parts)


def _method(plan: Plan) -> str:
    per_agent = plan.conversations // plan.agents
    rates = ", ".join(f"{r:,.0f}" for r in sorted(plan.rates))
    return (
        f"`python -m bench.contact_center` (and `make bench`, after the matrix): {plan.conversations:,} "
        f"conversations created and taken over ({plan.setup_at_once} at a time), each by one of "
        f"{plan.agents} agents ({per_agent} each); one customer stream per conversation "
        f"(`/chatbot/api/sessions/{{s}}/events`) and one stream per agent "
        f"(`/workbench/api/agents/{{a}}/events`), {plan.conversations + plan.agents:,} in all, from "
        f"{plan.receivers} receiver process{'es' if plan.receivers > 1 else ''} (a stream counts as "
        "open once its `connected` event arrived). One publisher process sends messages at a "
        "Poisson rate R (exponential gaps, drawn in advance), half as customers (`POST "
        "/chatbot/api/chat`) and half as the holding agent (`POST "
        "/workbench/api/sessions/{s}/messages`), each to a uniformly random conversation. A "
        "customer's message is due on the customer stream and on the agent's stream, an agent's on "
        "the customer stream. Latency runs from the message's scheduled send time (it travels in "
        "the content) to its arrival on each stream due to get it, over every such delivery; a "
        "publisher running late therefore counts against the server, not for it.\n\n"
        f"Steps of R: {rates} messages/s, each held {plan.warmup:g} s (warm-up, not counted) then "
        f"{plan.seconds:g} s (measured), the deliveries then awaited for at most {plan.drain:g} s. A step "
        f"passes with p99 < {plan.target_p99_ms:g} ms (the original design's target), no missing "
        f"delivery, no HTTP error, and at least {plan.min_achieved:.0%} of R sent and answered; the "
        f"steps stop after the first failure (but {plan.reference_rate:,.0f}/s always runs). The "
        "sustained rate is the highest step passing before the first failure.\n\n"
        "Each configuration runs `python run.py --insecure --workers W` (limits lifted: rate limits, "
        "stream limits) on a flushed Redis. RSS is the serving processes' (with `--workers 2` the sum "
        "of both workers, the supervisor left out), read when idle: after the setup, then with every "
        "stream open. The load generators share the machine's cores with the server and Redis, as "
        "in the rest of this benchmark: their CPU is in the tables.\n"
    )


def _headline(results: list[ConfigResult], plan: Plan) -> str:
    head = "| | " + " | ".join(r.label for r in results) + " | target |"
    rule = "|---|" + "---:|" * len(results) + "---|"
    rows = [
        (
            f"sustained messages/s (p99 < {plan.target_p99_ms:g} ms, nothing missing)",
            [_sustained_cell(r, plan) for r in results],
            "",
        ),
        (
            f"p99 ms at {plan.reference_rate:,.0f} messages/s",
            [_reference_cell(r, plan) for r in results],
            f"< {plan.target_p99_ms:g} ms",
        ),
        (
            f"server GC pauses ≥ {GC_MIN_MS:g} ms at {plan.reference_rate:,.0f} messages/s (longest ms)",
            [_reference_gc_cell(r, plan) for r in results],
            "",
        ),
        (
            "RSS KiB per conversation (its customer stream, its share of an agent's)",
            [_fmt(r.rss_per_conversation_kib(), 1) if not r.failure else r.failure for r in results],
            "",
        ),
        (
            "Redis connections (pub/sub), every stream open",
            [
                f"{r.redis_connections:,} ({r.pubsub_connections:,})"
                if r.redis_connections is not None
                else "-"
                for r in results
            ],
            "one pub/sub connection per process",
        ),
    ]
    body = "\n".join(f"| {label} | " + " | ".join(cells) + f" | {target} |" for label, cells, target in rows)
    return f"{head}\n{rule}\n{body}\n"


def _sustained_cell(result: ConfigResult, plan: Plan) -> str:
    if result.failure and not result.steps:
        return result.failure
    best = result.sustained(plan)
    if best is None:
        return "none (the first step failed)"
    last = len(result.steps) == len(plan.rates) and not result.steps[-1].problems(plan)
    later = [s for s in result.steps if s.rate > best.rate and not s.problems(plan)]
    return f"{'≥ ' if last else ''}{best.rate:,.0f} (p99 {best.p99_ms:,.1f} ms)" + (
        f"; {', '.join(f'{s.rate:,.0f}' for s in later)}/s passed after a failure" if later else ""
    )


def _reference_gc_cell(result: ConfigResult, plan: Plan) -> str:
    step = result.at_rate(plan.reference_rate)
    return "not run" if step is None else _gc_cell(step)


def _reference_cell(result: ConfigResult, plan: Plan) -> str:
    step = result.at_rate(plan.reference_rate)
    if step is None:
        return "not run"
    others = [p for p in step.problems(plan) if not p.startswith("p99")]
    return f"{step.p99_ms:,.1f}" + (f" ({'; '.join(others)})" if others else "")


def _config_line(result: ConfigResult) -> str:
    if result.failure and not result.opened:
        return result.failure
    return (
        f"Setup {result.setup_seconds:.1f} s; {result.opened:,} of {result.streams:,} streams open in "
        f"{result.open_seconds:.1f} s. RSS: {result.rss_fresh_kib / 1024:,.0f} MiB started, "
        f"{result.rss_before_kib / 1024:,.0f} MiB with the conversations, "
        f"{result.rss_after_kib / 1024:,.0f} MiB with every stream open "
        f"({_fmt(result.rss_per_conversation_kib(), 1)} KiB per conversation), "
        f"{result.rss_end_kib / 1024:,.0f} MiB after the last step. Redis: {result.redis_connections} "
        f"connections, {result.pubsub_connections} of them pub/sub."
        + (f" {result.failure}." if result.failure else "")
        + (f" The server {result.stopped}." if result.stopped else "")
    )


STEP_HEADER = (
    "| R /s | sent /s | p50 ms | p99 ms | max ms | missing | dup | HTTP errors | publisher lag p99 ms "
    "| server CPU % | Redis CPU % | publisher / receiver CPU % | other CPU % | server GC pauses "
    "(longest ms) | verdict |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def _step_table(result: ConfigResult, plan: Plan) -> str:
    if not result.steps:
        return "No step ran.\n"
    rows = []
    for s in result.steps:
        problems = s.problems(plan)
        rows.append(
            f"| {s.rate:,.0f} | {s.achieved:,.0f} | {s.p50_ms:,.1f} | {s.p99_ms:,.1f} | {s.max_ms:,.0f} "
            f"| {s.missing:,}{' (late)' if s.missing and s.ended == 'deadline' else ''} | {s.duplicates:,} "
            f"| {_describe(s.errors) if s.errors else 0} | {s.lag_p99_ms:,.1f} | {s.server_cpu:.0f} "
            f"| {s.redis_cpu:.0f} | {s.publisher_cpu:.0f} / {'+'.join(f'{c:.0f}' for c in s.receiver_cpu)} "
            f"| {s.other_cpu:.0f} | {_gc_cell(s)} | {'fail: ' + '; '.join(problems) if problems else 'pass'} |"
        )
    return STEP_HEADER + "\n" + "\n".join(rows) + "\n"


def _gc_cell(step: StepResult) -> str:
    if step.gc_pauses is None:
        return "-"
    return f"{step.gc_pauses} ({step.gc_longest_ms:,.0f})" if step.gc_pauses else "0"


def _notes(results: list[ConfigResult], plan: Plan) -> str:
    notes = [
        f"Server GC pauses: the serving processes' garbage collections of {GC_MIN_MS:g} ms or more "
        "(any generation) from the start of the measured window to the last delivery awaited, "
        "logged by `bench/gc_watch/sitecustomize.py` (on the server's PYTHONPATH, so the workers "
        "of `--workers 2` load it too); the event loop, and every stream with it, stands still "
        "while one runs."
        if plan.gc_watch
        else "The server's garbage collections were not watched.",
        "CPU % is of one core (the machine has "
        f'{_cpus()}), over the warm-up and the measured window; "other" is the machine\'s busy '
        "time outside the server, Redis and the load generators: the kernel's loopback work, and "
        "anything else running then (a large figure marks a noisy step). With the load generators "
        "on the same cores, a step near the machine's capacity measures the machine as much as "
        "the server.",
    ]
    dups = [(r, s) for r in results for s in r.steps if s.duplicates or s.unexpected]
    if dups:
        notes.append(
            "Duplicated or unexpected deliveries (never expected in a sound run): "
            + "; ".join(
                f"{r.label} at {s.rate:,.0f}/s: {s.duplicates} duplicated, {s.unexpected} unexpected"
                for r, s in dups
            )
            + "."
        )
    retried = [(r, s) for r in results for s in r.steps if s.retried_after]
    if retried:
        notes.append(
            "Steps run twice, their first try having failed while the machine was busy elsewhere "
            "(the table shows the second): "
            + "; ".join(f"{r.label} at {s.rate:,.0f}/s ({s.retried_after})" for r, s in retried)
            + "."
        )
    busy = [(r, s) for r in results for s in r.steps if s.busy_before >= QUIET_CPU]
    if busy:
        notes.append(
            f"Steps started on a machine still busy elsewhere after {QUIET_WAIT:.0f} s of waiting: "
            + "; ".join(f"{r.label} at {s.rate:,.0f}/s ({s.busy_before:.0f}%)" for r, s in busy)
            + "."
        )
    paused = [
        (r, s)
        for r in results
        for s in r.steps
        if s.p99_ms >= plan.target_p99_ms and s.gc_longest_ms >= plan.target_p99_ms / 2
    ]
    if paused:
        notes.append(
            "Steps over the p99 target with long garbage collections in the server: "
            + "; ".join(
                f"{r.label} at {s.rate:,.0f}/s, p99 {s.p99_ms:,.0f} ms, {s.gc_pauses} pauses up to "
                f"{s.gc_longest_ms:,.0f} ms ({s.gc_total_ms:,.0f} ms in all), server CPU {s.server_cpu:.0f}%"
                for r, s in paused
            )
            + ". While a collection runs nothing else does: the requests and deliveries of that "
            "moment wait, then the backlog drains, so one pause can set the p99 of a whole step "
            "(a server near a full core of CPU adds queueing of its own)."
        )
    cut = [(r, s) for r in results for s in r.steps if s.cut]
    if cut:
        notes.append(
            "Streams the server ended (a slow consumer cut off): "
            + "; ".join(f"{r.label} at {s.rate:,.0f}/s: {s.cut}" for r, s in cut)
            + "."
        )
    receiver_top = max((max(s.receiver_cpu, default=0.0) for r in results for s in r.steps), default=0.0)
    notes.append(
        f"{plan.receivers} receiver process{'es' if plan.receivers > 1 else ''}: the busiest used "
        f"{receiver_top:.0f}% of a core in a step (the publisher, sending and parsing HTTP, costs "
        "several times more)."
    )
    if plan.quick:
        notes.append("A quick run (`--quick`): fewer conversations and agents, short steps; figures only.")
    return "\n".join(f"- {n}" for n in notes) + "\n"


def _cpus() -> str:
    count = os.cpu_count() or 0
    return f"{count} core{'s' if count != 1 else ''}"


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# Running it alone ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.contact_center", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="500 conversations, 5 agents, short steps")
    parser.add_argument(
        "--workers",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        help="comma-separated server configurations, by worker count [1,2]",
    )
    parser.add_argument("--conversations", type=int, help="[5000; quick 500]")
    parser.add_argument("--agents", type=int, help="[50; quick 5]")
    parser.add_argument(
        "--rates",
        type=lambda s: tuple(float(v) for v in s.split(",")),
        help="comma-separated steps, messages/s",
    )
    parser.add_argument("--seconds", type=float, help="measured window of each step [10; quick 2]")
    parser.add_argument("--receivers", type=int, choices=(1, 2), help="receiver processes [1]")
    parser.add_argument(
        "--no-gc-watch", action="store_true", help="do not log the server's long garbage collections"
    )
    parser.add_argument("--redis-url", help="use this Redis (never flushed) instead of starting one")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report [docs/benchmarks-contact-center.md; quick: .tmp/bench/quick/...]; the raw "
        "figures go beside it with --out or --quick, else to .tmp/bench/contact-center/results.json",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    changes: dict[str, Any] = {}
    for name in ("workers", "conversations", "agents", "rates", "seconds", "receivers"):
        value = getattr(args, name)
        if value:
            changes[name] = value
    if args.no_gc_watch:
        changes["gc_watch"] = False
    plan = replace(plan, **changes)
    if plan.agents < 1 or plan.conversations < plan.agents:
        raise SystemExit("need at least one agent, and at least as many conversations as agents")
    return plan


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    plan = build_plan(args)
    out = args.out or (
        ROOT / ".tmp" / "bench" / "quick" / "benchmarks-contact-center.md"
        if plan.quick
        else ROOT / "docs" / "benchmarks-contact-center.md"
    )
    started = time.monotonic()
    files_limit = raise_open_files_limit()
    if files_limit < 2 * (plan.conversations + plan.agents) + 4096:
        logger.warning("open files limit %d may be too low for %d streams", files_limit, plan.conversations)
    own: RedisProcess | None = None
    redis_server: RedisLike
    if args.redis_url:
        redis_server = ExternalRedis(args.redis_url)
    else:
        own = RedisProcess(WORK_DIR / "redis")
        own.start()
        redis_server = own
    try:
        results = run(plan, redis_server, WORK_DIR / "logs")
    finally:
        if own is not None:
            own.stop()
    elapsed = time.monotonic() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out.write_text(
        "# Benchmark: contact center\n\n"
        f"Written by `python -m bench.contact_center{' --quick' if plan.quick else ''}` on {date} in "
        f"{elapsed / 60:.1f} minutes; do not edit by hand, run it again. `make bench` writes the same "
        "section into [benchmarks.md](benchmarks.md).\n\n" + markdown(results, plan)
    )
    raw = out.with_suffix(".results.json") if plan.quick or args.out else WORK_DIR / "results.json"
    raw.write_text(
        json.dumps(
            {"plan": asdict(plan), "seconds": elapsed, "results": [asdict(r) for r in results]}, indent=1
        )
    )
    logger.info("done in %.0f s: %s (raw figures in %s)", elapsed, out, raw)


if __name__ == "__main__":
    main()
