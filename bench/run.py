"""``python -m bench.run [--quick] [--profile]`` (``make bench``): the benchmark of issue 5.

Starts its own redis-server (and a 3-master Redis Cluster for switchboard-cluster) and, for
every scenario, a fresh server process in each mode (switchboard: one Redis pub/sub connection
per process; switchboard-cluster: the same on the cluster, at one N; baseline: one per stream,
the original design; baseline-pool: the same with redis-py's pools raised past their default
100 connections), opens N SSE streams from a receiver process, publishes agent messages from a
publisher process, measures; then the publish path step by step (bench.publish_steps) and,
with --profile, the server under py-spy (bench.profiling); then the contact-center scenario
(bench.contact_center); and writes docs/benchmarks.md and docs/benchmarks.png. Everything runs on 127.0.0.1; every process is stopped by its PID; every
wait is bounded.
"""

import argparse
import json
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy

from bench import contact_center, nchan, profiling, publish_steps
from bench.cluster import RedisClusterProcesses
from bench.nchan import NchanProcess
from bench.procs import (
    ROOT,
    CpuMeter,
    RedisProcess,
    ServerProcess,
    raise_open_files_limit,
    rss_kib,
)
from bench.profiling import Profile, Recording
from bench.results import (
    CLUSTER,
    LAYOUTS,
    LOADS,
    MODES,
    NCHAN,
    POOL_QUERY,
    SHORT,
    OpenResult,
    ScenarioResult,
    latency_percentiles,
)
from bench.workers import Worker, call_all

logger = logging.getLogger("bench")

WORK_DIR = ROOT / ".tmp" / "bench"
SETUP_TIMEOUT = 120.0
CALL_MARGIN = 30.0  # beyond a command's own bound, before the harness gives up on a worker
STILL_BUSY = 50.0  # server CPU % after a load above which missing events count as late
OPEN_AT_ONCE = 100  # streams being opened at once (keeps the listen backlog from overflowing)
# The cluster mode's second try when opening OPEN_AT_ONCE at once met 503s: below the server's
# cluster client pool (64 connections per node, app/backends.py), which does not wait for a
# free connection but fails.
CLUSTER_RETRY_AT_ONCE = 32

RedisLike = RedisProcess | RedisClusterProcesses  # url, pids, flush(), connections()


@dataclass(frozen=True, slots=True)
class Plan:
    """The matrix and its durations."""

    sizes: tuple[int, ...] = (100, 1000, 3000, 5000)
    layouts: tuple[str, ...] = tuple(LAYOUTS)
    modes: tuple[str, ...] = MODES
    fixed_rate: float = 20.0  # messages per second, all sessions together
    fixed_seconds: float = 5.0
    max_seconds: float = 3.0
    max_concurrency: int = 16  # publisher tasks in the max-rate scenario
    drain: float = 10.0  # longest wait for the last deliveries after publishing ends
    quiet: float = 4.0  # ... or for this long without any delivery
    settle: float = 1.0  # idle time after opening, before RSS is read
    receivers: int = 1
    quick: bool = False
    # switchboard-cluster runs at these N only (at the run's largest N if none is in sizes).
    cluster_sizes: tuple[int, ...] = (1000,)
    publish_steps: bool = True
    profile: bool = False
    profile_streams: int = 1000
    contact_center: bool = True

    def open_timeout(self, n: int) -> float:
        """Longest time to open n streams (past it the mode fails at that size)."""
        return max(15.0, n / 80)


# At 100 streams baseline-pool is the baseline itself (its default pool suffices): left out.
QUICK = Plan(
    sizes=(100,),
    modes=("switchboard", CLUSTER, "baseline"),
    fixed_seconds=2.0,
    max_seconds=1.5,
    drain=5.0,
    quiet=1.0,
    settle=0.5,
    quick=True,
    cluster_sizes=(100,),
)


@dataclass(slots=True)
class Rig:
    """The processes of one combination (mode, N, layout)."""

    server: ServerProcess | NchanProcess
    receivers: list[Worker]
    publisher: Worker
    sessions: list[str]

    @property
    def pids(self) -> list[int]:
        return [self.server.pid, self.publisher.pid, *(w.pid for w in self.receivers)]


def session_names(tag: str, mode: str, n: int, layout: str) -> list[str]:
    """One session for all streams, or one per 10 streams."""
    count = 1 if layout == "one" else max(1, n // 10)
    return [f"{tag}-{SHORT[mode]}{n}{layout}-{i}" for i in range(count)]


def start_rig(mode: str, n: int, layout: str, redis: RedisLike, plan: Plan, tag: str) -> Rig:
    """A fresh server in ``mode`` and fresh load-generator processes."""
    url = redis.url + (POOL_QUERY if mode == "baseline-pool" else "")
    server: ServerProcess | NchanProcess = (
        NchanProcess(url, WORK_DIR / "logs", WORK_DIR / "nchan")
        if mode == NCHAN
        else ServerProcess(mode, url, WORK_DIR / "logs")
    )
    receivers = [Worker("receiver", f"receiver-{i}") for i in range(plan.receivers)]
    rig = Rig(server, receivers, Worker("publisher", "publisher"), session_names(tag, mode, n, layout))
    server.start()
    for worker in [rig.publisher, *receivers]:
        worker.start()
    return rig


def stop_rig(rig: Rig) -> str:
    """Stop every process of the rig; how the server ended ("" if cleanly)."""
    for worker in [rig.publisher, *rig.receivers]:
        worker.stop()
    ended = rig.server.stop()
    if ended:
        logger.warning("server %s; see %s", ended, rig.server.log_path)
    return ended


def open_streams(
    rig: Rig, n: int, layout: str, mode: str, redis: RedisLike, plan: Plan, at_once: int = OPEN_AT_ONCE
) -> OpenResult:
    """Create and take over the sessions, then open n streams across them (at most ``at_once``
    at a time) and read RSS and Redis connections once they are idle."""
    result = OpenResult(mode, n, layout, at_once=at_once)
    setup = (
        nchan.announce(rig.server.url, rig.sessions)
        if mode == NCHAN
        else rig.publisher.call("setup", SETUP_TIMEOUT, base_url=rig.server.url, sessions=rig.sessions)
    )
    if setup["errors"]:
        result.failure = f"failed: session setup ({_describe(setup['errors'])})"
        return result
    time.sleep(plan.settle)
    result.rss_before_kib = rss_kib(rig.server.pid)
    timeout = plan.open_timeout(n)
    answers = call_all(rig.receivers, "open", timeout + CALL_MARGIN, _open_commands(rig, n, timeout, at_once))
    result.opened = sum(a["opened"] for a in answers)
    result.open_seconds = max(a["seconds"] for a in answers)
    for answer in answers:
        for error, count in answer["errors"].items():
            result.errors[error] = result.errors.get(error, 0) + count
    if result.opened < n:
        result.failure = f"failed: {result.opened:,} of {n:,} streams opened ({_describe(result.errors)})"
        _log_open(result)
        return result
    time.sleep(plan.settle)
    result.rss_after_kib = rss_kib(rig.server.pid)
    result.redis_connections, result.pubsub_connections = redis.connections()
    _log_open(result)
    return result


def _open_commands(rig: Rig, n: int, timeout: float, at_once: int) -> list[dict[str, Any]]:
    """Stream i is on session i mod S, and opened by receiver i mod R (each opening at most
    ``at_once`` at a time)."""
    plan_for: list[dict[str, Any]] = [
        {
            "host": "127.0.0.1",
            "port": rig.server.port,
            "paths": [],
            "sessions": [],
            "timeout": timeout,
            "at_once": at_once,
        }
        for _ in rig.receivers
    ]
    for i in range(n):
        session = i % len(rig.sessions)
        command = plan_for[i % len(rig.receivers)]
        command["paths"].append(f"/chatbot/api/sessions/{rig.sessions[session]}/events")
        command["sessions"].append(session)
    return plan_for


def _server_log_errors(log_path: Path) -> str:
    """Why the server answered 503, as its log says (", server log: ..."), or ""."""
    try:
        text = log_path.read_text(errors="replace")[-200_000:]
    except OSError:
        return ""
    reasons = sorted(
        {
            line.partition("answering 503): ")[2].strip()[:120]
            for line in text.splitlines()
            if "answering 503): " in line
        }
    )
    return f", server log: {'; '.join(reasons)}" if reasons else ""


def _describe(errors: dict[str, int]) -> str:
    return (
        ", ".join(f"{count:,} × {error}" for error, count in sorted(errors.items(), key=lambda e: -e[1]))
        or "no error"
    )


def run_load(rig: Rig, redis: RedisLike, base: int, load: str, plan: Plan, result: ScenarioResult) -> int:
    """Publish one load and collect what the streams received; returns the next free
    sequence number."""
    call_all(rig.receivers, "begin", CALL_MARGIN, [{"base": base}] * len(rig.receivers))
    pids = [*rig.pids, *redis.pids]
    before = CpuMeter.take(pids)
    duration = plan.fixed_seconds if load == "fixed" else plan.max_seconds
    published = rig.publisher.call(
        "publish",
        duration + CALL_MARGIN,
        base_url=rig.server.url,
        sessions=rig.sessions,
        base=base,
        duration=duration,
        rate=plan.fixed_rate if load == "fixed" else None,
        concurrency=plan.max_concurrency,
        **nchan.publish_options(result.mode),
    )
    collect = {
        "base": base,
        "published": published["ok"],
        "sessions": len(rig.sessions),
        "drain": plan.drain,
        "quiet": plan.quiet,
    }
    received = call_all(rig.receivers, "collect", plan.drain + CALL_MARGIN, [collect] * len(rig.receivers))
    after = CpuMeter.take(pids)
    _fill_publishing(result, published)
    _fill_receiving(result, received, published["start"])
    _fill_cpu(result, before, after, rig, redis)
    if result.missing and not result.late:
        result.busy_after = _busy_after(rig.server.pid)
        result.late = result.busy_after >= STILL_BUSY
    if not result.published:
        result.failure = f"failed: no publish succeeded ({_describe(result.publish_errors)})"
    if not rig.server.alive():
        result.failure = "failed: the server exited during the run"
    return base + int(published["attempted"]) + 1


def _busy_after(pid: int) -> float:
    """The server's CPU (% of a core) over the next second, with no load applied: a server
    still that busy is still working through a backlog."""
    before = CpuMeter.take([pid])
    time.sleep(1.0)
    return CpuMeter.take([pid]).percent_since(before, pid)


def _fill_publishing(result: ScenarioResult, published: dict[str, Any]) -> None:
    result.published = len(published["ok"])
    result.attempted = published["attempted"]
    result.publish_errors = published["errors"]
    span = max(published["end"] - published["start"], 1e-9)
    result.publish_rps = result.published / span
    result.request_p50_ms = published["request_p50"] * 1000.0
    result.request_p99_ms = published["request_p99"] * 1000.0


def _fill_receiving(result: ScenarioResult, received: list[dict[str, Any]], start: float) -> None:
    for key in ("expected", "deliveries", "missing", "duplicates", "unexpected", "cut"):
        setattr(result, key, sum(r[key] for r in received))
    result.late = any(r["ended"] == "deadline" for r in received)
    lasts = [r["last"] for r in received if r["last"] is not None]
    if lasts:
        result.seconds = max(lasts) - start
        result.deliveries_per_s = result.deliveries / max(result.seconds, 1e-9)
    samples = numpy.concatenate([numpy.frombuffer(r["latencies"], dtype=numpy.float64) for r in received])
    for key, value in latency_percentiles(samples).items():
        setattr(result, key, value)


def _fill_cpu(result: ScenarioResult, before: CpuMeter, after: CpuMeter, rig: Rig, redis: RedisLike) -> None:
    result.server_cpu = after.percent_since(before, rig.server.pid)
    result.redis_cpu = sum(after.percent_since(before, pid) for pid in redis.pids)  # a cluster: all nodes
    result.publisher_cpu = after.percent_since(before, rig.publisher.pid)
    result.receiver_cpu = [after.percent_since(before, w.pid) for w in rig.receivers]
    result.machine_cpu = after.machine_percent_since(before)


def run_combination(
    mode: str, n: int, layout: str, redis: RedisLike, plan: Plan, tag: str, at_once: int = OPEN_AT_ONCE
) -> tuple[OpenResult, list[ScenarioResult]]:
    """One mode, one N, one layout: a fresh server, N streams, then each load (the max rate
    first: it is closed-loop, so it leaves no backlog, where an overloaded fixed rate may)."""
    if mode == NCHAN and (absent := nchan.missing()):
        return _not_run(mode, n, layout, absent)
    loads = [ScenarioResult(mode, n, layout, load) for load in ("max", "fixed")]
    opened = OpenResult(mode, n, layout)
    rig: Rig | None = None
    try:
        rig = start_rig(mode, n, layout, redis, plan, tag)
        opened = open_streams(rig, n, layout, mode, redis, plan, at_once)
        if opened.failure and mode == CLUSTER:
            opened.failure += _server_log_errors(rig.server.log_path)
        base = 0
        for result in loads:
            if opened.failure:
                result.failure = opened.failure
                continue
            base = run_load(rig, redis, base, result.load, plan, result)
            _log_load(result)
            time.sleep(plan.settle)
    except (RuntimeError, OSError, EOFError) as exc:  # WorkerError is a RuntimeError
        failure = f"failed: {exc}"
        logger.warning("%s N=%d %s: %s", mode, n, layout, failure)
        opened.failure = opened.failure or failure
        for result in loads:
            result.failure = result.failure or failure
    finally:
        if rig is not None:
            opened.stopped = stop_rig(rig)
    return opened, loads


def _log_load(result: ScenarioResult) -> None:
    logger.info(
        "  %s: %s deliveries/s, p50 %.1f ms, p99 %.1f ms, missing %d%s, duplicates %d, "
        "%.0f publishes/s, server CPU %.0f%%, receiver CPU %s%%",
        result.load,
        f"{result.deliveries_per_s:,.0f}",
        result.p50_ms,
        result.p99_ms,
        result.missing,
        " (late)" if result.late else "",
        result.duplicates,
        result.publish_rps,
        result.server_cpu,
        "/".join(f"{c:.0f}" for c in result.receiver_cpu),
    )


def run_matrix(
    plan: Plan,
    redis: RedisProcess,
    cluster: RedisClusterProcesses | str | None,
) -> tuple[list[OpenResult], list[ScenarioResult]]:
    """Every (N, layout) in every mode, the modes side by side so that noise hits them alike;
    switchboard-cluster at plan.cluster_sizes only, on ``cluster`` (a string: why there is none)."""
    tag = f"b{int(time.time()) % 100000}"
    opens: list[OpenResult] = []
    scenarios: list[ScenarioResult] = []
    for n in plan.sizes:
        for layout in plan.layouts:
            for mode in plan.modes:
                if mode == CLUSTER and n not in plan.cluster_sizes:
                    continue
                backend = cluster if mode == CLUSTER else redis
                if backend is None or isinstance(backend, str):
                    opened, loads = _not_run(mode, n, layout, f"failed: {backend or 'no Redis Cluster'}")
                else:
                    logger.info("%s: %d streams, %s", mode, n, LAYOUTS[layout])
                    opened, loads = run_combination(mode, n, layout, backend, plan, tag)
                    backend.flush()
                    if mode == CLUSTER and opened.failure and "HTTP 503" in opened.failure:
                        first = opened.failure
                        logger.info(
                            "%s: %d streams, %s, again, opening at most %d at once",
                            mode,
                            n,
                            LAYOUTS[layout],
                            CLUSTER_RETRY_AT_ONCE,
                        )
                        opened, loads = run_combination(
                            mode, n, layout, backend, plan, tag + "r", CLUSTER_RETRY_AT_ONCE
                        )
                        opened.retried_after = first
                        backend.flush()
                opens.append(opened)
                scenarios.extend(loads)
    return opens, scenarios


def _not_run(mode: str, n: int, layout: str, failure: str) -> tuple[OpenResult, list[ScenarioResult]]:
    opened = OpenResult(mode, n, layout, failure=failure)
    return opened, [ScenarioResult(mode, n, layout, load, failure=failure) for load in ("max", "fixed")]


def start_cluster(plan: Plan) -> RedisClusterProcesses | str | None:
    """The Redis Cluster, when the plan has a cluster combination; a string says why it did not
    start (its combinations then fail, the rest of the run goes on)."""
    if CLUSTER not in plan.modes or not set(plan.cluster_sizes) & set(plan.sizes):
        return None
    cluster = RedisClusterProcesses(WORK_DIR / "cluster")
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        logger.warning("Redis Cluster did not start: %s", exc)
        return f"the Redis Cluster did not start ({str(exc).splitlines()[0]})"
    return cluster


# What --profile samples: per layout, the loads (the matrix's own), each on a fresh server.
PROFILED = (("one", ("max", "fixed")), ("per10", ("max",)))


def run_profile(plan: Plan, redis: RedisProcess) -> list[Profile]:
    """The switchboard server under py-spy with plan.profile_streams streams: the one-channel
    loads (max rate, then fixed, as in the matrix), then the max rate on one channel per 10
    streams (an agent message's whole path with its few streams: the contact-center shape)."""
    profiles: list[Profile] = []
    for layout, loads in PROFILED:
        profiles += _profile_layout(plan, redis, layout, loads)
    return profiles


def _profile_layout(plan: Plan, redis: RedisProcess, layout: str, loads: tuple[str, ...]) -> list[Profile]:
    n = plan.profile_streams
    results = [ScenarioResult("switchboard", n, layout, load) for load in loads]
    labels = {load: f"{n:,} streams, {LAYOUTS[layout]}, {LOADS[load]}" for load in loads}
    profiles: list[Profile] = []
    rig: Rig | None = None
    logger.info("profile: switchboard, %d streams, %s, under py-spy", n, LAYOUTS[layout])
    try:
        rig = start_rig("switchboard", n, layout, redis, plan, f"prof{int(time.time()) % 100000}")
        opened = open_streams(rig, n, layout, "switchboard", redis, plan)
        if opened.failure:
            return [Profile(labels[load], error=opened.failure) for load in loads]
        base = 0
        for result in results:
            duration = plan.fixed_seconds if result.load == "fixed" else plan.max_seconds
            recording = Recording(
                rig.server.pid,
                WORK_DIR / f"profile-{layout}-{result.load}.raw",
                labels[result.load],
                max_seconds=duration + plan.drain + 2 * CALL_MARGIN,
            )
            recording.start()
            try:
                base = run_load(rig, redis, base, result.load, plan, result)
            finally:
                profile = recording.stop()
            profile.figures = (
                f"The load under the profiler: {result.deliveries_per_s:,.0f} deliveries/s, "
                f"{result.publish_rps:,.0f} publishes/s, p50 {result.p50_ms:.1f} ms, p99 "
                f"{result.p99_ms:.1f} ms, server CPU {result.server_cpu:.0f}%"
                + (f" ({result.failure})" if result.failure else "")
                + "."
            )
            logger.info("  %s: %s", profile.label, profile.error or f"{profile.samples} samples")
            profiles.append(profile)
            time.sleep(plan.settle)
    except (RuntimeError, OSError, EOFError) as exc:
        logger.warning("profile run failed: %s", exc)
        done = {p.label for p in profiles}
        profiles += [
            Profile(labels[load], error=f"the profiled run failed: {exc}")
            for load in loads
            if labels[load] not in done
        ]
    finally:
        if rig is not None:
            stop_rig(rig)
        redis.flush()
    return profiles


def _log_open(opened: OpenResult) -> None:
    if opened.failure:
        logger.warning("  %s", opened.failure)
        return
    logger.info(
        "  opened %d streams in %.1f s; %.1f KiB RSS per stream; %s Redis connections (%s pub/sub)",
        opened.opened,
        opened.open_seconds,
        opened.rss_per_stream_kib or 0.0,
        opened.redis_connections,
        opened.pubsub_connections,
    )


def clear_logs() -> None:
    """Drop the previous run's server and Redis logs (the benchmark's own directories only)."""
    for pattern in ("logs/server-*.log", "redis/redis-*.log", "cluster/redis-*.log"):
        for log in WORK_DIR.glob(pattern):
            log.unlink()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 streams, short loads")
    parser.add_argument(
        "--sizes",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        help="comma-separated stream counts (default 100,1000,3000,5000; quick: 100)",
    )
    parser.add_argument(
        "--modes", type=lambda s: tuple(s.split(",")), help="comma-separated, of " + ",".join(MODES)
    )
    parser.add_argument("--receivers", type=int, choices=(1, 2), help="receiver processes [1]")
    parser.add_argument(
        "--out", type=Path, help="markdown report [docs/benchmarks.md; quick: .tmp/bench/quick/benchmarks.md]"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the server with py-spy during the 1,000-stream loads (both layouts)",
    )
    parser.add_argument("--profile-streams", type=int, help="streams for --profile [1000]")
    parser.add_argument("--no-publish-steps", action="store_true", help="leave out the publish path section")
    parser.add_argument(
        "--no-contact-center", action="store_true", help="leave out the contact-center scenario"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    changes: dict[str, Any] = {}
    if args.sizes:
        changes["sizes"] = args.sizes
    if args.modes:
        changes["modes"] = tuple(m for m in MODES if m in args.modes)
    if args.receivers:
        changes["receivers"] = args.receivers
    if args.profile:
        changes["profile"] = True
    if args.profile_streams:
        changes["profile_streams"] = args.profile_streams
    if args.no_publish_steps:
        changes["publish_steps"] = False
    if args.no_contact_center:
        changes["contact_center"] = False
    plan = replace(plan, **changes)
    # The cluster mode at its own N when the run has it, else at the run's largest N.
    cluster_sizes = tuple(n for n in plan.cluster_sizes if n in plan.sizes) or (max(plan.sizes),)
    return replace(plan, cluster_sizes=cluster_sizes)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    plan = build_plan(args)
    # Imported here: every spawned load-generator process imports this module again, and
    # needs no matplotlib.
    from bench import report

    out = args.out or (
        WORK_DIR / "quick" / "benchmarks.md" if plan.quick else ROOT / "docs" / "benchmarks.md"
    )
    started = time.monotonic()
    clear_logs()
    files_limit = raise_open_files_limit()
    machine = report.describe_machine(files_limit)
    redis = RedisProcess(WORK_DIR / "redis")
    redis.start()
    cluster = None
    steps: publish_steps.PublishSteps | None = None
    profiles: list[Profile] | None = None
    contact: contact_center.Run | None = None
    try:
        machine["redis"] = report.redis_version(redis)
        cluster = start_cluster(plan)
        if isinstance(cluster, RedisClusterProcesses):
            machine["cluster_start"] = cluster.start_seconds
        opens, scenarios = run_matrix(plan, redis, cluster)
        if isinstance(cluster, RedisClusterProcesses):
            cluster.stop()
        if plan.publish_steps:
            redis.flush()
            steps = publish_steps.measure(
                redis.url, publish_steps.QUICK if plan.quick else publish_steps.Config(), WORK_DIR / "logs"
            )
            redis.flush()
        if plan.profile:
            profiles = run_profile(plan, redis)
            (WORK_DIR / "profile.txt").write_text(profiling.text(profiles))
        if plan.contact_center:
            redis.flush()
            cc_plan = contact_center.QUICK if plan.quick else contact_center.Plan()
            contact = contact_center.Run(cc_plan, contact_center.run(cc_plan, redis, WORK_DIR / "logs"))
    finally:
        if isinstance(cluster, RedisClusterProcesses):
            cluster.stop()
        redis.stop()
    elapsed = time.monotonic() - started
    raw = out.with_name(f"{out.stem}.results.json") if plan.quick or args.out else WORK_DIR / "results.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        json.dumps(
            {
                "plan": asdict(plan),
                "machine": machine,
                "seconds": elapsed,
                "opens": [asdict(o) for o in opens],
                "scenarios": [asdict(s) for s in scenarios],
                "publish_steps": asdict(steps) if steps else None,
                "profiles": [asdict(p) for p in profiles] if profiles is not None else None,
                "contact_center": asdict(contact) if contact is not None else None,
            },
            indent=1,
        )
    )
    report.write(out, plan, machine, opens, scenarios, elapsed, steps, profiles, contact)
    logger.info("done in %.0f s: %s (raw figures in %s)", elapsed, out, raw)


if __name__ == "__main__":
    main()
