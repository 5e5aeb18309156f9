"""``python -m bench.stream_memory``: what an open, idle SSE stream costs the server's memory, and
where those bytes are.

For every broker (a fresh redis-server on a free loopback port, or ``--no-redis``) and every N,
a fresh server process (``bench.serve``, as ``make bench`` starts it, or ``run.py`` with
``--via run``) gets N idle streams on session channels (one session per 10 streams, as the
benchmark's "channel per 10" layout), opened from this process with the benchmark's raw
asyncio client, at most 100 at a time. Reported: the server's VmRSS growth per stream (the
benchmark's figure) and, from a second server run under ``tracemalloc`` (``--trace``), the
Python allocations per stream by source line and the objects per stream the collector tracks,
by type. The traced server is this module run with ``--serve-traced``: a SIGUSR1 makes it write
a snapshot, so that nothing but the streams happens between the two snapshots compared.
"""

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import ROOT, RedisProcess, ServerProcess, raise_open_files_limit, rss_kib
from bench.publisher import Publisher
from bench.receiver import Receiver

logger = logging.getLogger("bench")

WORK_DIR = ROOT / ".tmp" / "bench" / "stream_memory"
STREAMS_PER_SESSION = 10
AT_ONCE = 100
SETTLE = 1.0  # idle seconds after opening, before memory is read
SNAPSHOT_TIMEOUT = 60.0
TRACE_ENV = "SWITCHBOARD_TRACE_DIR"  # where a traced server writes its snapshots


@dataclass(slots=True)
class Measured:
    """One server process with N idle streams."""

    broker: str
    streams: int
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    open_seconds: float = 0.0
    # Traced runs: bytes per stream by "file:line", and collector-tracked objects per stream by type.
    sites: list[tuple[str, float, float]] = field(default_factory=list)  # site, bytes, blocks
    traced_bytes: float = 0.0
    objects: list[tuple[str, float]] = field(default_factory=list)
    objects_total: float = 0.0

    @property
    def kib_per_stream(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.streams


# ---------------------------------------------------------------------- the traced server


def serve_traced(argv: list[str]) -> None:
    """The server (bench.serve, or run.py after ``--via-run``) under tracemalloc; each SIGUSR1
    writes a snapshot and the collector's objects by type to $SWITCHBOARD_TRACE_DIR."""
    via_run = argv[:1] == ["--via-run"]
    argv = argv[1:] if via_run else argv
    frames = int(os.environ.get("SWITCHBOARD_TRACE_FRAMES", "1"))
    tracemalloc.start(frames)
    out = Path(os.environ[TRACE_ENV])
    taken = 0

    def snapshot(signum: int, frame: object) -> None:
        nonlocal taken
        gc.collect()
        tracemalloc.take_snapshot().dump(str(out / f"{taken}.trace"))
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        (out / f"{taken}.types.json").write_text(json.dumps(types))
        (out / f"{taken}.done").touch()
        taken += 1

    signal.signal(signal.SIGUSR1, snapshot)
    if via_run:
        import run

        run.main(argv)
    else:
        from bench import serve

        serve.main(argv)


def _take_snapshot(pid: int, trace_dir: Path, index: int) -> tuple[tracemalloc.Snapshot, Counter[str]]:
    os.kill(pid, signal.SIGUSR1)
    done = trace_dir / f"{index}.done"
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the traced server wrote no snapshot")
        time.sleep(0.1)
    snap = tracemalloc.Snapshot.load(str(trace_dir / f"{index}.trace"))
    types = Counter(json.loads((trace_dir / f"{index}.types.json").read_text()))
    return snap, types


# ---------------------------------------------------------------------- the harness


def start_server(broker: str, redis: RedisProcess | None, via: str, trace_dir: Path | None) -> ServerProcess:
    server = ServerProcess("switchboard", redis.url if redis else "redis://127.0.0.1:1/0", WORK_DIR / "logs")
    if broker == "memory":
        server.args.append("--no-redis")
    if via == "run":
        # run.py takes the same flags; it serves with the guarded connections and gc.freeze.
        server.args[1:3] = ["run.py"]
    if trace_dir is not None:
        entry = ["-m", "bench.stream_memory", "--serve-traced", *(["--via-run"] if via == "run" else [])]
        first_flag = server.args.index("--insecure")
        server.args[1:first_flag] = entry
        server.env[TRACE_ENV] = str(trace_dir)
    server.start()
    return server


async def create_sessions(server: ServerProcess, n: int) -> None:
    sessions = [f"mem-{server.port}-{i}" for i in range(max(1, n // STREAMS_PER_SESSION))]
    publisher = Publisher()
    try:
        setup = await publisher.do_setup(server.url, sessions)
    finally:
        await publisher.close()
    if setup["errors"]:
        raise RuntimeError(f"session setup failed: {setup['errors']}")


async def _open(server: ServerProcess, receiver: Receiver, n: int) -> float:
    sessions = max(1, n // STREAMS_PER_SESSION)
    paths = [f"/chatbot/api/sessions/mem-{server.port}-{i % sessions}/events" for i in range(n)]
    opened = await receiver.do_open(
        "127.0.0.1", server.port, paths, [i % sessions for i in range(n)], max(30.0, n / 50), AT_ONCE
    )
    if opened["opened"] < n:
        raise RuntimeError(f"{opened['opened']} of {n} streams opened: {opened['errors']}")
    return float(opened["seconds"])


def _close(receiver: Receiver) -> None:
    for transport in receiver.transports:
        transport.abort()


async def measure(
    broker: str, n: int, redis: RedisProcess | None, via: str, trace: bool, top: int
) -> Measured:
    result = Measured(broker, n)
    with tempfile.TemporaryDirectory(prefix="stream-memory-") as tmp:
        trace_dir = Path(tmp) if trace else None
        server = start_server(broker, redis, via, trace_dir)
        receiver = Receiver()
        try:
            await create_sessions(server, n)
            # One stream opened and closed first: what the first stream alone allocates
            # (lazy imports, caches) is not a per-stream cost.
            await _open(server, receiver, 1)
            _close(receiver)
            receiver = Receiver()
            await asyncio.sleep(SETTLE)
            before = _take_snapshot(server.pid, trace_dir, 0) if trace_dir else None
            result.rss_before_kib = rss_kib(server.pid)
            result.open_seconds = await _open(server, receiver, n)
            await asyncio.sleep(SETTLE)
            result.rss_after_kib = rss_kib(server.pid)
            if trace_dir is not None and before is not None:
                after = _take_snapshot(server.pid, trace_dir, 1)
                _attribute(result, before, after, top)
        finally:
            _close(receiver)
            ended = server.stop()
            if ended:
                logger.warning("server %s; see %s", ended, server.log_path)
    return result


def _attribute(
    result: Measured,
    before: tuple[tracemalloc.Snapshot, Counter[str]],
    after: tuple[tracemalloc.Snapshot, Counter[str]],
    top: int,
) -> None:
    n = result.streams
    skip = tracemalloc.Filter(False, tracemalloc.__file__)
    stats = after[0].filter_traces([skip]).compare_to(before[0].filter_traces([skip]), "lineno")
    result.traced_bytes = sum(s.size_diff for s in stats) / n
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{_short(frame.filename)}:{frame.lineno}"
        result.sites.append((where, stat.size_diff / n, stat.count_diff / n))
    grown = after[1] - before[1]
    result.objects_total = sum(grown.values()) / n
    result.objects = [(name, count / n) for name, count in grown.most_common(top)]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in filename:
            return filename.partition(marker)[2].lstrip("0123456789./")
    return os.path.relpath(filename, ROOT) if filename.startswith(str(ROOT)) else filename


def report(results: list[Measured], via: str) -> str:
    lines = [
        f"RSS per idle stream, server via {'run.py' if via == 'run' else 'bench.serve'} "
        f"(one session per {STREAMS_PER_SESSION} streams)\n",
        "| broker | streams | RSS before KiB | RSS after KiB | KiB per stream | open s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.rss_before_kib:
            lines.append(
                f"| {r.broker} | {r.streams:,} | {r.rss_before_kib:,} | {r.rss_after_kib:,} | "
                f"{r.kib_per_stream:.1f} | {r.open_seconds:.1f} |"
            )
    for r in results:
        if not r.sites:
            continue
        lines += [
            f"\nPython allocations per stream (tracemalloc), {r.broker}, {r.streams:,} streams: "
            f"{r.traced_bytes:,.0f} bytes, {r.objects_total:.1f} objects tracked by the collector\n",
            "| site | bytes per stream | blocks per stream |",
            "|---|---:|---:|",
            *(f"| {site} | {size:,.0f} | {blocks:.2f} |" for site, size, blocks in r.sites),
            "\n| type (collector-tracked) | objects per stream |",
            "|---|---:|",
            *(f"| {name} | {count:.2f} |" for name, count in r.objects),
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--streams", default="2000,5000", help="N, comma-separated [%(default)s]")
    parser.add_argument("--brokers", default="redis,memory", help="redis, memory or both [%(default)s]")
    parser.add_argument("--via", choices=("serve", "run"), default="serve", help="server entry [%(default)s]")
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc run per N, for attribution")
    parser.add_argument("--trace-only", action="store_true", help="the tracemalloc runs only")
    parser.add_argument("--top", type=int, default=25, help="allocation sites and types shown [%(default)s]")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace) -> list[Measured]:
    sizes = [int(s) for s in args.streams.split(",")]
    brokers = [b.strip() for b in args.brokers.split(",")]
    redis = RedisProcess(WORK_DIR / "redis") if "redis" in brokers else None
    runs = ([] if args.trace_only else [False]) + ([True] if args.trace or args.trace_only else [])
    results = []
    if redis is not None:
        redis.start()
    try:
        for broker in brokers:
            for n in sizes:
                for trace in runs:
                    if redis is not None:
                        redis.flush()
                    measured = await measure(broker, n, redis, args.via, trace, args.top)
                    logger.info(
                        "%s, %d streams%s: %.1f KiB per stream",
                        broker,
                        n,
                        " (traced)" if trace else "",
                        measured.kib_per_stream,
                    )
                    if trace:
                        measured.rss_before_kib = 0  # RSS under tracemalloc is not the figure
                    results.append(measured)
    finally:
        if redis is not None:
            redis.stop()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-traced"]:
        serve_traced(argv[1:])
        return
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise_open_files_limit()
    results = asyncio.run(run_all(args))
    print(report(results, args.via))


if __name__ == "__main__":
    main()
