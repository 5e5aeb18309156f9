"""A redis-server the test owns: started on a free loopback port, killed with SIGKILL and
restarted on the same port, to test outages for real (pytest-redis' session server is shared
and must stay up)."""

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tests.support.processes import HOST, free_port
from tests.support.wait import poll_sync

START_TIMEOUT = 10.0


def client_of(port: int, **options: Any) -> redis.Redis:
    """A plain client of the server on ``port`` that gives up on a dead one quickly; ``options``
    go to redis-py's client as they are."""
    return redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5, **options)


def answers_ping(port: int, timeout: float, process: "subprocess.Popen[bytes] | None" = None) -> bool:
    """Whether the server on ``port`` answers PING within ``timeout``; RuntimeError if its
    ``process`` exits first."""
    client = client_of(port)

    def answers() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with status {process.returncode}")
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False

    try:
        return poll_sync(answers, timeout=timeout).ok
    finally:
        client.close()


class RedisServer:
    """A redis-server without snapshots on a free loopback port (``extra``: more
    redis-server flags; ``preexec_fn``: run in the child before exec)."""

    start_timeout = START_TIMEOUT

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        port: int | None = None,
        extra: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir.resolve()  # redis-server changes into it: no relative paths
        self.appendonly = appendonly
        self.extra = list(extra)
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        assert executable, "redis-server is not installed (make test installs it)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--logfile",
                str(self.workdir / f"redis-{self.port}.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=self.preexec_fn,  # safe as preexec_fn: the harness starts it from one thread
        )
        if not answers_ping(self.port, self.start_timeout, self.process):
            raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, exactly like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server must die too
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung server, a dead link)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()


@contextmanager
def temporary_redis() -> Iterator[RedisServer]:
    """A redis-server of its own in a temporary directory, stopped (and the directory removed)
    at the end: what a benchmark run stands on."""
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()
