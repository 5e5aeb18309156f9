"""The processes the benchmark owns (a redis-server and the server under test), each started on
a free loopback port and stopped by its PID, and what /proc says about a process. Starting,
waiting for and stopping a process is the test suite's harness (tests/support)."""

import ctypes
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.processes import (
    HOST,
    STOP_TIMEOUT,
    free_port,
    stop_process,
    wait_until_serving,
)
from tests.support.processes import ROOT as ROOT  # re-exported for the benchmark's modules
from tests.support.redis_server import RedisServer

logger = logging.getLogger(__name__)

START_TIMEOUT = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_PRCTL = getattr(ctypes.CDLL(None), "prctl", None)  # looked up before any fork
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child, before exec: ask Linux to SIGTERM it when the harness dies, so that a
    harness killed outright leaves no server or redis-server behind. (Run as preexec_fn:
    safe here, the harness runs no other thread while it starts processes.)"""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_open_files_limit() -> int:
    """Lift this process's soft limit on open files to the hard limit (children inherit it);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open files limit: %s", exc)
    return soft


def stop_pid(process: "subprocess.Popen[bytes]", timeout: float = STOP_TIMEOUT) -> str:
    """SIGTERM the process by its PID, then SIGKILL if it has not exited within ``timeout``;
    returns how it ended ("" for a clean and prompt exit)."""
    stopped = stop_process(process, timeout)
    if stopped.already:
        return f"had exited with status {stopped.returncode}" if stopped.returncode else ""
    if stopped.killed:
        return f"still running {timeout:.0f} s after SIGTERM: killed"
    if stopped.returncode:
        return f"exited with status {stopped.returncode} after SIGTERM"
    return f"took {stopped.seconds:.1f} s to stop" if stopped.seconds > 2 else ""


class RedisProcess(RedisServer):
    """A redis-server without persistence on a free loopback port (``extra``: more
    redis-server flags, such as a cluster node's), which dies with the harness."""

    start_timeout = START_TIMEOUT

    def __init__(self, workdir: Path, extra: Sequence[str] = (), port: int | None = None) -> None:
        super().__init__(workdir, port=port, extra=extra, preexec_fn=die_with_parent)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        """The redis-server processes behind ``url`` (one here; a cluster has several)."""
        return [self.pid]

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def connections(self) -> tuple[int, int]:
        """Connections and pub/sub connections the server holds (see redis_connections)."""
        with self.client() as client:
            return redis_connections(client)

    def start(self) -> None:
        """Start and wait (bounded) until it answers PING."""
        try:
            super().start()
        except BaseException:
            self.stop()
            raise

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=10)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it does not go."""
        if self.process is not None:
            stop_pid(self.process)
            self.process = None


# A benchmark server's flags: its limits lifted (every stream and session of a run comes from
# one address and one principal), quiet logs, rare heartbeats.
SERVER_LIMITS_LIFTED = (
    "--max-streams",
    "100000",
    "--max-streams-per-token",
    "1000000",
    "--rate-limit",
    "1000000",
    "--rate-burst",
    "1000000",
    "--start-rate",
    "1000000",
    "--heartbeat",
    "30",
    "--log-level",
    "WARNING",
)


class ServerProcess:
    """``python -m bench.serve [--baseline] ...`` on a free loopback port, its output in a log."""

    def __init__(self, mode: str, redis_url: str, log_dir: Path) -> None:
        self.port = free_port()
        self.mode = mode
        baseline = mode.startswith("baseline")
        self.args = [
            sys.executable,
            "-m",
            "bench.serve",
            *(["--baseline"] if baseline else []),
            "--insecure",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--redis-url",
            redis_url,
            *SERVER_LIMITS_LIFTED,
        ]
        self.log_path = log_dir / f"server-{mode}-{self.port}.log"
        self.env: dict[str, str] = {}  # added to the harness's environment
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start and wait (bounded) until /health answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                preexec_fn=die_with_parent,  # safe as preexec_fn: no other thread runs
            )
        try:
            serving = wait_until_serving(self.url, self.process, START_TIMEOUT)
        except RuntimeError:
            raise RuntimeError(f"server exited at start; see {self.log_path}") from None
        if not serving:
            self.stop()
            raise RuntimeError(f"server did not answer /health in {START_TIMEOUT:.0f} s")

    def stop(self) -> str:
        """Stop it; how it ended ("" for a clean and prompt exit)."""
        if self.process is None:
            return ""
        ended = stop_pid(self.process)
        self.process = None
        return ended


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (from /proc/*/stat): a supervisor's workers, nginx's
    worker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (from /proc/<pid>/stat); 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class CpuMeter:
    """CPU seconds of some processes and of the whole machine at one moment."""

    wall: float
    per_pid: dict[int, float]
    machine: float

    @classmethod
    def take(cls, pids: list[int]) -> "CpuMeter":
        return cls(time.monotonic(), {pid: cpu_seconds(pid) for pid in pids}, machine_busy_seconds())

    def percent_since(self, earlier: "CpuMeter", pid: int) -> float:
        """CPU of ``pid`` between the two readings, as % of one core."""
        elapsed = max(self.wall - earlier.wall, 1e-9)
        return 100.0 * (self.per_pid.get(pid, 0.0) - earlier.per_pid.get(pid, 0.0)) / elapsed

    def machine_percent_since(self, earlier: "CpuMeter") -> float:
        """Busy CPU of the whole machine between the two readings, as % of one core."""
        elapsed = max(self.wall - earlier.wall, 1e-9)
        return 100.0 * (self.machine - earlier.machine) / elapsed


def redis_connections(client: redis.Redis) -> tuple[int, int]:
    """Connections Redis holds (not counting the one asking), and how many of them are
    subscribed to a channel (pub/sub connections)."""
    clients = client.client_list()
    subscribed = sum(
        1 for c in clients if int(c.get("sub", 0)) + int(c.get("psub", 0)) + int(c.get("ssub", 0)) > 0
    )
    return max(0, len(clients) - 1), subscribed
