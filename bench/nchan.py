"""nchan (nginx's pub/sub module, with Redis storage) as the benchmark's reference column.

Debian's ``libnginx-mod-nchan`` runs in one nginx worker from ``bench/nchan/nginx.conf``, on
the URLs Switchboard uses, so that the same receiver and publisher measure both: streams on
``GET /chatbot/api/sessions/{s}/events`` (an EventSource subscriber on channel ``{s}``),
messages on ``POST /workbench/api/sessions/{s}/messages`` (a publisher on ``{s}``). nchan
delivers the body it was given, so the publisher posts the very envelope that Switchboard
would send for an agent message (``NchanPublishRun``), and the harness announces every
channel with a ``connected`` envelope before streams open (``announce``): the subscriber
location starts at the newest message in the channel, so a stream's first event is that
announcement, which the receiver takes for "open" as it takes Switchboard's own.
"""

import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from app.domain.store.rules import new_message
from bench.procs import START_TIMEOUT, children, die_with_parent, stop_pid
from bench.publisher import AGENT, PublishRun
from bench.results import NCHAN
from realtime.channels import session_channel
from realtime.events import encode, envelope
from tests.support.processes import HOST, free_port, wait_until_serving
from tests.support.wait import poll_sync

logger = logging.getLogger(__name__)

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
TEMPLATE = Path(__file__).with_name("nchan") / "nginx.conf"
PACKAGES = "nginx libnginx-mod-nchan"
# More than the largest N plus the publisher's connections, within the harness's open files
# limit (which nginx inherits).
CONNECTIONS = 16000
ANNOUNCE_TIMEOUT = 5.0  # one announcement's request
JSON = {"Content-Type": "application/json"}

_noted = False


def nginx_path() -> str | None:
    """nginx on the PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def missing() -> str | None:
    """Why nchan cannot run here ("not installed: ..."), or None when it can. The first time
    it is missing, a note says how to add it: the reference column is optional, the run goes
    on without it."""
    global _noted
    lacking = [what for what, ok in (("nginx", nginx_path()), (str(MODULE), MODULE.is_file())) if not ok]
    if not lacking:
        return None
    if not _noted:
        _noted = True
        logger.info("nchan mode skipped: %s not installed (apt-get install %s)", ", ".join(lacking), PACKAGES)
    return "not installed"


def nchan_available() -> bool:
    """Whether nginx and Debian's nchan module are both installed."""
    return missing() is None


def render(port: int, redis_url: str, prefix: Path, error_log: Path) -> str:
    """bench/nchan/nginx.conf with its fields filled in."""
    fields = {
        "MODULE": str(MODULE),
        "PREFIX": str(prefix),
        "ERROR_LOG": str(error_log),
        "CONNECTIONS": str(CONNECTIONS),
        "REDIS_URL": redis_url,
        "PORT": str(port),
    }
    text = TEMPLATE.read_text()
    for name, value in fields.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise RuntimeError(f"{TEMPLATE}: a field was left unfilled")
    return text


class NchanProcess:
    """nginx with nchan on a free loopback port, its configuration and temporary files under
    ``work_dir``, its error log (and output) in ``log_dir``. Started and stopped by the
    master's PID; ``pid`` is the one worker's, which does the work the benchmark measures."""

    mode = NCHAN

    def __init__(self, redis_url: str, log_dir: Path, work_dir: Path) -> None:
        self.port = free_port()
        self.redis_url = redis_url
        # server-*.log: bench.run clears the previous run's logs by that name.
        self.log_path = log_dir / f"server-{NCHAN}-{self.port}.log"
        self.prefix = work_dir / str(self.port)
        self.conf_path = self.prefix / "nginx.conf"
        self.process: subprocess.Popen[bytes] | None = None
        self._worker: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The worker's PID (found once the server answers)."""
        assert self._worker is not None
        return self._worker

    def alive(self) -> bool:
        """The master runs and still has the worker it started with: a worker that crashed
        and was replaced by another lost its streams."""
        return (
            self.process is not None
            and self.process.poll() is None
            and self._worker is not None
            and self._worker in children(self.process.pid)
        )

    def start(self) -> None:
        """Write the configuration, start nginx and wait (bounded) until /health answers 200
        and its worker is there."""
        nginx = nginx_path()
        if nginx is None or not MODULE.is_file():
            raise RuntimeError(f"nchan is not installed (apt-get install {PACKAGES})")
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render(self.port, self.redis_url, self.prefix, self.log_path))
        args = [nginx, "-p", str(self.prefix), "-c", str(self.conf_path), "-e", str(self.log_path)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.prefix,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # safe as preexec_fn: no other thread runs
            )
        try:
            serving = wait_until_serving(self.url, self.process, START_TIMEOUT)
        except RuntimeError:
            raise RuntimeError(f"nginx exited at start; see {self.log_path}") from None
        master = self.process.pid
        found = poll_sync(lambda: children(master), timeout=START_TIMEOUT, interval=0.05)
        if not serving or not found.ok or found.value is None:
            self.stop()
            raise RuntimeError(
                f"nginx did not serve with a worker in {START_TIMEOUT:.0f} s; see {self.log_path}"
            )
        self._worker = found.value[0]

    def stop(self) -> str:
        """Stop the master (it stops its worker); how it ended ("" for a clean and prompt exit)."""
        if self.process is None:
            return ""
        ended = stop_pid(self.process)
        self.process = None
        return ended


def connected_envelope(session: str) -> bytes:
    """What Switchboard sends first on a stream, in the same shape (its only use here: the
    receiver's sign that the stream is open)."""
    payload = {"channels": [session_channel(session)], "session_name": session, "recovered": False}
    return encode(envelope("connected", payload, "system")).encode()


def message_envelope(session: str, content: str) -> bytes:
    """The event Switchboard sends its streams for an agent message, built by the same code
    (its message record, envelope and encoding): the same fields and, but for the session's
    name, the same size."""
    payload = {"session_name": session, "message": new_message("agent", content, AGENT)}
    return encode(envelope("new_message", payload, "agent_workbench")).encode()


def announce(base_url: str, sessions: list[str]) -> dict[str, Any]:
    """Publish a ``connected`` envelope to every channel, in place of the session setup
    Switchboard needs (create, take over): nchan has no session to create. Answers as the
    publisher's ``setup`` does."""
    errors: dict[str, int] = {}
    started = time.monotonic()
    for session in sessions:
        request = urllib.request.Request(
            f"{base_url}/workbench/api/sessions/{session}/messages",
            data=connected_envelope(session),
            headers=JSON,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=ANNOUNCE_TIMEOUT) as response:
                status: int | str = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            status = type(exc).__name__
        if status not in NchanPublishRun.accepted:
            errors[f"announce: {status}"] = errors.get(f"announce: {status}", 0) + 1
    return {"seconds": time.monotonic() - started, "errors": errors}


def publish_options(mode: str) -> dict[str, Any]:
    """The publisher's extra arguments in ``mode`` (none but for nchan)."""
    return {"feed": NCHAN} if mode == NCHAN else {}


class NchanPublishRun(PublishRun):
    """The publisher's run against nchan: the same messages, numbers and timing, posted as the
    envelope Switchboard would have built for them; nchan answers 201 when the channel has
    subscribers and 202 when it has none (both are a message published)."""

    accepted = frozenset({200, 201, 202})

    def body(self, seq: int, sent: float) -> dict[str, Any] | bytes:
        session = self.sessions[(seq - self.base) % len(self.sessions)]
        return message_envelope(session, self.content(seq, sent))
