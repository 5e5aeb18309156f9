"""``python -m bench.run --profile``: the server process sampled by py-spy (``py-spy record
--format raw``, the ``bench`` extra) during a load, and the top functions by self and by
inclusive time. py-spy that cannot attach (no ptrace permission, not installed) is reported,
not fatal."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RATE = 100  # samples per second (py-spy's default)
TOP = 25
START_GRACE = 1.0  # py-spy that exits this soon failed to attach
STOP_TIMEOUT = 15.0  # py-spy writes its output after SIGINT


@dataclass(slots=True)
class Profile:
    """One load, sampled: what py-spy saw of the server process."""

    label: str
    seconds: float = 0.0
    samples: int = 0  # samples with the process busy (py-spy leaves idle ones out)
    self_top: list[tuple[str, int]] = field(default_factory=list)
    inclusive_top: list[tuple[str, int]] = field(default_factory=list)
    raw_path: str = ""
    error: str | None = None
    figures: str = ""  # the load's own figures under the profiler, one line

    @property
    def busy(self) -> float:
        """Share of the samples py-spy would have taken that found the process busy."""
        return self.samples / max(self.seconds * RATE, 1.0)


def py_spy() -> str | None:
    """The py-spy executable: beside this Python (a venv), or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """``py-spy record`` on one PID, from start() to stop(), bounded by ``max_seconds``."""

    def __init__(self, pid: int, raw_path: Path, label: str, max_seconds: float) -> None:
        self.pid = pid
        self.profile = Profile(label, raw_path=str(raw_path))
        self.raw_path = raw_path
        self.log_path = raw_path.with_suffix(".log")
        self.max_seconds = max_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        executable = py_spy()
        if executable is None:
            self.profile.error = "py-spy is not installed (`pip install -e '.[bench]'`)"
            return
        self.raw_path.parent.mkdir(parents=True, exist_ok=True)
        self.raw_path.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:  # a file, not a pipe nobody reads while it runs
            self.process = subprocess.Popen(
                [
                    executable,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--format",
                    "raw",
                    "--nolineno",
                    "--rate",
                    str(RATE),
                    "--duration",
                    str(int(self.max_seconds) + 1),
                    "--output",
                    str(self.raw_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(START_GRACE)  # an attach failure shows at once
        self.started = time.monotonic()
        if self.process.poll() is not None:
            self._failed()

    def stop(self) -> Profile:
        """SIGINT (py-spy then writes its file), SIGKILL by PID if it does not leave; read it."""
        process = self.process
        if process is None:
            return self.profile
        self.profile.seconds = time.monotonic() - self.started
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        self.process = None
        if process.returncode != 0 or not self.raw_path.exists():
            self._failed(process)
            return self.profile
        self._read()
        return self.profile

    def _failed(self, process: subprocess.Popen[bytes] | None = None) -> None:
        process = process or self.process
        assert process is not None
        try:
            output = self.log_path.read_text(errors="replace")
        except OSError:
            output = ""
        # py-spy prints its error, then a Rust backtrace: keep the error.
        message = " ".join(output.split("Stack backtrace:")[0].split())[:300]
        hint = (
            " (no permission to ptrace the server: run as root, give py-spy CAP_SYS_PTRACE, or "
            "set kernel.yama.ptrace_scope to 0)"
            if "ermission" in message
            else ""
        )
        self.profile.error = (
            f"py-spy could not record pid {self.pid} (exit {process.returncode}): "
            f"{message or 'no output'}{hint}"
        )
        self.process = None

    def _read(self) -> None:
        own, inclusive, total = top_functions(self.raw_path)
        self.profile.samples = total
        self.profile.self_top = own
        self.profile.inclusive_top = inclusive


# Frames under every stack (starting the process, running the event loop): left out of the
# inclusive ranking, where they would fill the top rows at ~100% and say nothing.
PLUMBING = (
    "(<frozen runpy>)",
    "(bench/serve.py)",
    "run_app (aiohttp/web.py)",
    "BaseEventLoop.run_forever (",
    "BaseEventLoop.run_until_complete (",
    "BaseEventLoop._run_once (",
    "Handle._run (asyncio/events.py)",
)


def top_functions(raw_path: Path, top: int = TOP) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """From py-spy's raw (collapsed) stacks, ``frame;frame;...;leaf count`` per line: the
    ``top`` functions by self samples (the leaf) and by inclusive samples (anywhere in the
    stack, once per sample; PLUMBING left out), and the number of samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not any(p in frame for p in PLUMBING):
                inclusive[frame] += count
    return own.most_common(top), inclusive.most_common(top), total


def _table(rows: list[tuple[str, int]], total: int) -> list[str]:
    lines = ["| # | function (file) | samples | % of busy samples |", "|---:|---|---:|---:|"]
    for i, (frame, count) in enumerate(rows, 1):
        cell = frame.replace("|", "\\|")
        lines.append(f"| {i} | `{cell}` | {count:,} | {100 * count / max(total, 1):.1f}% |")
    return lines


def markdown(profiles: list[Profile] | None, n: int) -> str:
    """The report's profile section ("" when --profile was not given)."""
    if profiles is None:
        return ""
    lines = [
        "## Profile (`--profile`)\n",
        (
            f"The switchboard server process sampled by `py-spy record --format raw --nolineno` "
            f"({RATE} samples/s, idle samples left out) during a separate run of {n:,}-stream "
            "loads after the matrix: the one-channel ones, and the max rate on one channel per 10 "
            "streams, where each publish is an agent message with its few streams, as in a contact "
            "center (a fresh server per layout, the same loads as in the matrix; "
            "the matrix's own figures are not taken under the profiler, which pauses the process at "
            "each sample). Self: the function was running (the leaf of the stack); inclusive: it "
            "was anywhere on the stack, leaving out the frames on every stack (process start, "
            "`run_forever`, `_run_once`, `Handle._run`). Percentages are of the samples py-spy took "
            "with the server busy (it leaves out those where it waited in epoll). Raw "
            "stacks and these tables as text are in `.tmp/bench/profile-*.raw` and "
            "`.tmp/bench/profile.txt`.\n"
        ),
    ]
    for p in profiles:
        lines.append(f"### {p.label}\n")
        if p.error:
            lines.append(f"Not profiled: {p.error}.\n")
            continue
        lines.append(
            f"{p.samples:,} busy samples over {p.seconds:.1f} s ({100 * min(p.busy, 1):.0f}% of "
            f"the {RATE}/s sampling slots). {p.figures}\n"
        )
        lines += [
            "**By self time**\n",
            *_table(p.self_top, p.samples),
            "",
            "**By inclusive time**\n",
            *_table(p.inclusive_top, p.samples),
            "",
        ]
    return "\n".join(lines) + "\n"


def text(profiles: list[Profile]) -> str:
    """The same tables as plain text, for .tmp/bench/profile.txt."""
    out = []
    for p in profiles:
        out.append(f"== {p.label}")
        if p.error:
            out.append(f"not profiled: {p.error}\n")
            continue
        out.append(f"{p.samples} busy samples over {p.seconds:.1f} s. {p.figures}")
        for title, rows in (("self", p.self_top), ("inclusive", p.inclusive_top)):
            out.append(f"-- top {len(rows)} by {title} samples")
            out += [f"{count:7d} {100 * count / max(p.samples, 1):5.1f}%  {frame}" for frame, count in rows]
        out.append("")
    return "\n".join(out) + "\n"
