"""``--workers N``: N full server processes on one port (SO_REUSEPORT), and the small supervisor
that starts them, forwards stop signals, replaces one that dies and gives up on one that keeps
dying. Workers share nothing but Redis, as separate deployments would, so this adds no new path
for events: it only spreads connections (and CPU) over processes.

A worker is ``run.py`` itself, re-executed with ``--workers 1`` and the ``SWITCHBOARD_WORKER``
marker in its environment (index, supervisor pid, readiness pipe): no pickling, nothing shared
in memory, and each worker is exactly the process one would start by hand.
"""

import collections
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

logger = logging.getLogger(__name__)

WORKER_ENV = "SWITCHBOARD_WORKER"
STOP_TIMEOUT = 10.0  # after SIGTERM, before SIGKILL
START_TIMEOUT = 60.0  # the first start may wait for Redis (redis_timeout) and imports
MAX_CRASHES = 5  # unexpected exits within CRASH_WINDOW before the supervisor gives up
CRASH_WINDOW = 30.0
POLL_INTERVAL = 0.1
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What the supervisor tells a worker through its environment."""

    index: int
    supervisor_pid: int
    ready_fd: int

    def to_env(self) -> str:
        return f"{self.index}:{self.supervisor_pid}:{self.ready_fd}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "WorkerRole | None":
        """The role if this process is a supervised worker, else None."""
        raw = (os.environ if environ is None else environ).get(WORKER_ENV)
        if not raw:
            return None
        index, supervisor_pid, ready_fd = (int(part) for part in raw.split(":"))
        return cls(index, supervisor_pid, ready_fd)

    def announce_ready(self) -> None:
        """Tell the supervisor this worker listens. Passed to ``serving.serve`` as
        ``on_listening``, called once the port is bound: the supervisor learns the first start
        worked without guessing from time or probing the shared port (any worker would answer)."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, b"1")
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)


def die_with_parent(supervisor_pid: int) -> None:
    """Make this worker get SIGTERM when the supervisor dies, even by SIGKILL, so that no
    orphan keeps serving the port. Linux: ``prctl(PR_SET_PDEATHSIG)`` (the idea of
    bench/procs.py); elsewhere a daemon thread watching the parent pid."""
    if not _set_parent_death_signal(signal.SIGTERM):
        threading.Thread(
            target=_watch_parent, args=(supervisor_pid,), name="watch-supervisor", daemon=True
        ).start()
    if os.getppid() != supervisor_pid:  # it died before the request took effect
        logger.error("the supervisor (pid %d) is gone: exiting", supervisor_pid)
        sys.exit(1)


def _set_parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    return prctl is not None and prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def _watch_parent(supervisor_pid: int) -> None:
    while os.getppid() == supervisor_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None. Workers bind with SO_REUSEPORT, which
    would let them silently share the port with another server of the same user (an old
    supervisor still running, say); this bind without it fails if anybody listens there."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as exc:
                return f"cannot listen on {address[0]}:{port}: {exc.strerror or exc}"
    return None


def describe(status: int) -> str:
    """An exit status in words (Popen's negative status is a signal)."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
        return f"killed by signal {-status}"
    return f"exit status {status}"


class Worker:
    """One worker process and the read end of its readiness pipe."""

    def __init__(self, index: int, command: Sequence[str]) -> None:
        self.index = index
        read_fd, write_fd = os.pipe()
        role = WorkerRole(index, os.getpid(), write_fd)
        try:
            self.process = subprocess.Popen(
                list(command),
                env={**os.environ, WORKER_ENV: role.to_env()},
                pass_fds=(write_fd,),
                # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
                # forwards it once (two signals would interrupt aiohttp's graceful shutdown).
                process_group=0,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.ready_fd: int | None = read_fd
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_ready(self) -> None:
        """Called when the pipe is readable: a byte means listening, EOF means it died first."""
        assert self.ready_fd is not None
        self.ready = os.read(self.ready_fd, 1) == b"1"
        self.close_pipe()
        if self.ready:
            logger.info("worker %d (pid %d) is serving", self.index, self.pid)

    def close_pipe(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None

    def send(self, signum: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


class WorkerSupervisor:
    """Starts ``count`` workers running ``command`` and keeps them running until SIGTERM or
    SIGINT. ``run`` returns the exit status: 0 after a requested stop, the failing worker's
    status if the first start fails, 1 when a worker keeps crashing."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        *,
        stop_timeout: float = STOP_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
        max_crashes: int = MAX_CRASHES,
        crash_window: float = CRASH_WINDOW,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.command = list(command)
        self.count = count
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.max_crashes = max_crashes
        self.crash_window = crash_window
        self.workers: dict[int, Worker] = {}
        self._crashes: collections.deque[float] = collections.deque()
        self._stop_signal: int | None = None

    def run(self) -> int:
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            try:
                for index in range(self.count):
                    self._spawn(index)
                status = self._supervise()
            finally:
                self._stop_all(self._stop_signal or signal.SIGTERM)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return status

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def _spawn(self, index: int) -> None:
        worker = Worker(index, self.command)
        self.workers[index] = worker
        logger.info("worker %d started (pid %d)", index, worker.pid)

    def _supervise(self) -> int:
        """Watch until asked to stop (0) or until a failure that ends everything (non-zero)."""
        started = False
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._wait_for_ready(POLL_INTERVAL)
            if self._stop_signal is not None:
                logger.info("%s: stopping %d workers", signal.Signals(self._stop_signal).name, self.count)
                return 0
            for index, worker in list(self.workers.items()):
                status = worker.process.poll()
                if status is None:
                    continue
                worker.close_pipe()
                if not started:
                    logger.error(
                        "worker %d (pid %d) failed at start (%s): stopping",
                        index,
                        worker.pid,
                        describe(status),
                    )
                    return status if status > 0 else 1
                logger.warning(
                    "worker %d (pid %d) died (%s): restarting it", index, worker.pid, describe(status)
                )
                if self._crash_budget_spent():
                    logger.error(
                        "%d worker deaths within %.0f s: giving up, stopping every worker",
                        self.max_crashes,
                        self.crash_window,
                    )
                    return 1
                self._spawn(index)
            if not started:
                if all(worker.ready for worker in self.workers.values()):
                    started = True
                    logger.info("all %d workers are serving", self.count)
                elif time.monotonic() > deadline:
                    logger.error("workers not listening %.0f s after start: stopping", self.start_timeout)
                    return 1

    def _wait_for_ready(self, timeout: float) -> None:
        """Sleep up to ``timeout``, waking for any worker's readiness pipe."""
        pending = {w.ready_fd: w for w in self.workers.values() if w.ready_fd is not None}
        if not pending:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(pending), [], [], timeout)
        for fd in readable:
            pending[fd].read_ready()

    def _crash_budget_spent(self) -> bool:
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.crash_window:
            self._crashes.popleft()
        return len(self._crashes) >= self.max_crashes

    def _stop_all(self, signum: int) -> None:
        """Forward ``signum`` to every worker, wait for all (bounded), SIGKILL stragglers."""
        for worker in self.workers.values():
            worker.send(signum)
        deadline = time.monotonic() + self.stop_timeout
        for worker in self.workers.values():
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning(
                    "worker %d (pid %d) still running %.0f s after %s: SIGKILL",
                    worker.index,
                    worker.pid,
                    self.stop_timeout,
                    signal.Signals(signum).name,
                )
                worker.process.kill()
                worker.process.wait()
            worker.close_pipe()
        logger.info("all workers stopped")
