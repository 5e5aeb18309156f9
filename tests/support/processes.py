"""Real server processes for cross-process tests (and the benchmark's process control): started
on a free loopback port, waited for through /health (bounded), stopped by PID with SIGTERM and,
failing that, killed."""

import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import poll_sync

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LOG_TAIL = 6000  # characters of a server's log shown when it had to be killed
# Explicit, so a developer's USE_REDIS_SSE=false in the environment cannot change a test.
REDIS_ON = {"USE_REDIS_SSE": "true"}
# run.py flags for a test that starts more conversations from this one address than the default
# --start-rate allows in a minute, and is not about that limit (tests/test_address_limits.py is).
MANY_STARTS = ("--start-rate", "1000000")


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_open_file_limit(needed: int) -> int:
    """Lift this process's soft limit on open files to ``needed`` (as far as the hard limit
    allows; children inherit it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass(frozen=True)
class Stopped:
    """How a process ended: its status, whether it had exited before it was asked, whether
    it had to be killed, and how long the stop took."""

    returncode: int
    already: bool
    killed: bool
    seconds: float


def stop_process(process: "subprocess.Popen[bytes]", timeout: float = STOP_TIMEOUT) -> Stopped:
    """SIGTERM by PID, then SIGKILL if it has not exited within ``timeout``."""
    started = time.monotonic()
    if process.poll() is not None:
        return Stopped(process.returncode, True, False, 0.0)
    process.send_signal(signal.SIGTERM)
    killed = False
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d still running %.0f s after SIGTERM: SIGKILL", process.pid, timeout)
        process.kill()
        process.wait(timeout)
        killed = True
    return Stopped(process.returncode, False, killed, time.monotonic() - started)


def wait_until_serving(
    url: str, process: "subprocess.Popen[bytes]", timeout: float = START_TIMEOUT, path: str = "/health"
) -> bool:
    """Whether ``url`` + ``path`` answers 200 within ``timeout``; RuntimeError if the process
    exits first."""

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited at start with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return poll_sync(answers, timeout=timeout, interval=0.1).ok


class ServerProcess:
    """``run.py`` on a free loopback port (``args``: more of its flags), its output in a log."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None, log_dir: Path) -> None:
        self.port = free_port()
        self.args = [sys.executable, str(ROOT / "run.py"), "--host", HOST, "--port", str(self.port), *args]
        # Tests that are not about authentication run the server as `make run` does.
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWITCHBOARD_INSECURE": "true", **(env or {})}
        self.log_path = log_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Start (or start again, on the same port, appending to the same log)."""
        self.returncode = None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            serving = wait_until_serving(self.url, self.process)
        except RuntimeError:
            raise RuntimeError(f"server exited at start:\n{self.log()}") from None
        if not serving:
            self.stop()
            raise RuntimeError(f"server did not answer /health in {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit status."""
        if self.process is None or self.returncode is not None:
            return self.returncode
        stopped = stop_process(self.process)
        if stopped.killed:  # the server's own account of the stop that hung (serving.SLOW_STOP)
            logger.warning("the end of %s:\n%s", self.log_path.name, self.log()[-LOG_TAIL:])
        self.returncode = stopped.returncode
        return self.returncode

    def kill(self) -> None:
        """SIGKILL, at once: a crash, an OOM kill. The process may be started again."""
        if self.process is None or self.returncode is not None:
            return
        self.process.kill()
        self.returncode = self.process.wait(timeout=STOP_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run(self, timeout: float = START_TIMEOUT) -> "subprocess.CompletedProcess[str]":
        """Run this command line to its end instead (for a start that must refuse or fail)."""
        return subprocess.run(
            self.args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )


class PeerProcess:
    """Another real HTTP service a test talks to through the server (a webhook bot, a webhook
    receiver, an OpenAI-compatible endpoint): ``python -m module --port PORT *args`` on a free
    loopback port, ready when ``ready_path`` answers 200; a context manager that stops it."""

    def __init__(self, module: str, *args: str, log_dir: Path, ready_path: str = "/health") -> None:
        self.port = free_port()
        self.args = [sys.executable, "-m", module, "--port", str(self.port), *args]
        self.ready_path = ready_path
        self.log_path = log_dir / f"{module.rpartition('.')[2]}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "PeerProcess":
        """Start (or start again, on the same port)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_until_serving(self.url, self.process, path=self.ready_path):
            self.stop()
            raise RuntimeError(f"{self.args[2]} did not answer {self.ready_path} in {START_TIMEOUT}s")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "PeerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any Switchboard setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_py(
    *args: str, env: dict[str, str], timeout: float = START_TIMEOUT
) -> "subprocess.CompletedProcess[str]":
    """``python run.py *args`` to its end (a command, or a start that must be refused)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# The ``server_process`` fixture: start a real run.py process with these arguments.
StartServer = Callable[..., ServerProcess]
