"""The report's nchan section: switchboard beside the reference, figure by figure, and what
the comparison leaves out (bench/nchan.py runs it)."""

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.results import NCHAN, OpenResult, ScenarioResult, open_of, ratio, scenario_of

VERSION_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Row:
    """One figure: how to find it for a mode, and how to show it."""

    label: str
    pick: Callable[[str], OpenResult | ScenarioResult | None]
    value: Callable[[Any], float | None]
    digits: int


def versions() -> str:
    """nginx's and the module's package versions, as dpkg knows them."""
    found = []
    for package in ("nginx", "libnginx-mod-nchan"):
        try:
            version = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", package],
                capture_output=True,
                text=True,
                timeout=VERSION_TIMEOUT,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            version = "not installed"
        found.append(f"{package} {version}")
    return ", ".join(found)


def per_unit(cpu: float, rate: float) -> float | None:
    """Server CPU µs per delivery (or publish): ``cpu`` in % of a core, ``rate`` per second."""
    return cpu * 1e4 / rate if rate else None


def rows(opens: list[OpenResult], scenarios: list[ScenarioResult], n: int) -> list[Row]:
    """The headline figures at ``n`` streams; "channel per 10" is n / 10 channels."""

    def load(layout: str, kind: str) -> Callable[[str], ScenarioResult | None]:
        return lambda mode: scenario_of(scenarios, mode, n, layout, kind)

    def opened(layout: str) -> Callable[[str], OpenResult | None]:
        return lambda mode: open_of(opens, mode, n, layout)

    channels = f"{max(1, n // 10):,} channels"
    return [
        Row(
            f"deliveries/s, {n:,} streams, one channel, max rate",
            load("one", "max"),
            _attr("deliveries_per_s"),
            0,
        ),
        Row(
            f"publishes/s, {n:,} streams, {channels}, max rate", load("per10", "max"), _attr("publish_rps"), 0
        ),
        Row(f"p99 ms, {n:,} streams, one channel, fixed rate", load("one", "fixed"), _attr("p99_ms"), 1),
        Row(f"p99 ms, {n:,} streams, one channel, max rate", load("one", "max"), _attr("p99_ms"), 1),
        Row(f"p99 ms, {n:,} streams, {channels}, max rate", load("per10", "max"), _attr("p99_ms"), 1),
        Row(
            f"server CPU %, {n:,} streams, one channel, max rate", load("one", "max"), _attr("server_cpu"), 0
        ),
        Row(
            f"server CPU %, {n:,} streams, {channels}, max rate", load("per10", "max"), _attr("server_cpu"), 0
        ),
        Row(
            f"server CPU µs per delivery, {n:,} streams, one channel, max rate",
            load("one", "max"),
            lambda s: per_unit(s.server_cpu, s.deliveries_per_s),
            1,
        ),
        Row(
            f"server CPU µs per publish, {n:,} streams, {channels}, max rate",
            load("per10", "max"),
            lambda s: per_unit(s.server_cpu, s.publish_rps),
            0,
        ),
        Row(
            f"RSS KiB per idle stream, {n:,} streams, one channel",
            opened("one"),
            _attr("rss_per_stream_kib"),
            1,
        ),
        Row(
            f"RSS KiB per idle stream, {n:,} streams, {channels}",
            opened("per10"),
            _attr("rss_per_stream_kib"),
            1,
        ),
        Row(f"Redis connections, {n:,} streams, {channels}", opened("per10"), _attr("redis_connections"), 0),
    ]


def _attr(name: str) -> Callable[[Any], float | None]:
    return lambda result: getattr(result, name)


def markdown(opens: list[OpenResult], scenarios: list[ScenarioResult], plan: Any) -> str:
    """The section, when the run had the nchan mode."""
    if NCHAN not in plan.modes:
        return ""
    n = 1000 if 1000 in plan.sizes else max(plan.sizes)
    lines = [
        "## nchan (reference)\n",
        _setup(versions()),
        f"| at {n:,} streams | switchboard | nchan | switchboard / nchan |",
        "|---|---:|---:|---:|",
    ]
    for row in rows(opens, scenarios, n):
        ours, theirs = (_value(row, mode) for mode in ("switchboard", NCHAN))
        cells = [_cell(v, row.digits) for v in (ours, theirs)]
        both = (
            ratio(ours, theirs) if isinstance(ours, float | int) and isinstance(theirs, float | int) else None
        )
        lines.append(f"| {row.label} | {cells[0]} | {cells[1]} | {'-' if both is None else f'{both:.2f}'} |")
    lines += ["", DIFFERENCES]
    return "\n".join(lines) + "\n"


def _value(row: Row, mode: str) -> float | str | None:
    """The figure, or why there is none (a failure, such as "not installed")."""
    result = row.pick(mode)
    if result is None:
        return None
    if result.failure:
        return result.failure
    value = row.value(result)
    return None if value is None else float(value)


def _cell(value: float | str | None, digits: int) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:,.{digits}f}"


def _setup(installed: str) -> str:
    return (
        f"**nchan** ({installed}) runs in one nginx worker (`worker_processes 1`, the worker's "
        "CPU and RSS are what is measured, as the one Switchboard process's are) with Redis "
        "storage (`nchan_redis_pass` to the benchmark's redis-server, `nchan_redis_storage_mode "
        "distributed`: every message is stored in Redis in its channel's buffer, kept like a "
        "Switchboard channel's history, 1,000 messages for an hour, and published on Redis "
        "pub/sub, from which the worker delivers it to its streams), from "
        "`bench/nchan/nginx.conf`. It serves Switchboard's URLs: an EventSource subscriber on "
        "`GET /chatbot/api/sessions/{s}/events` and a publisher on "
        "`POST /workbench/api/sessions/{s}/messages`, channel `{s}`. It is fed the same way: the "
        "same receiver and publisher processes, the same message numbers at the same times; the "
        "publisher posts the event Switchboard would send for the message (built by Switchboard's "
        "own envelope code, same fields and size) and nchan passes it to the streams as it is. "
        "Before the streams open, the harness publishes Switchboard's `connected` event to every "
        "channel (in place of creating and taking over the sessions), and the subscriber starts "
        "at the newest message of its channel (`nchan_subscriber_first_message -1`), so that a "
        "stream's first event tells the receiver it is open, as with Switchboard. Without nginx "
        "and Debian's `libnginx-mod-nchan` (`apt-get install nginx libnginx-mod-nchan`) the mode "
        "is skipped and its cells say not installed. Ratio above 1 is better for deliveries/s and "
        "publishes/s, below 1 for the rest.\n"
    )


DIFFERENCES = (
    "What the comparison leaves out: nchan publishes the body it is given to the channel named "
    "in the URL, with no session behind it, so none of Switchboard's per-message work has a "
    "counterpart there: no request validation or session check (status, holding agent, "
    "conversation), no transcript append, session update or status index, no event built "
    "per message. Both store the message in Redis and publish it on Redis pub/sub in one "
    "round trip, and both deliver from one process's subscription to its streams; nchan does "
    "so in C inside nginx's event loop, Switchboard in Python (aiohttp), with heartbeats and "
    "per-stream slow-consumer queues."
)
