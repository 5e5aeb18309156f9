"""docs/benchmarks.md and its plot, from one run's results."""

import datetime
import importlib.metadata
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import contact_center, nchan_report, previous, profiling, publish_steps
from bench.plot import write_plot
from bench.procs import RedisProcess
from bench.results import (
    CLUSTER,
    COMPARED,
    LAYOUTS,
    LOADS,
    MODE_NOTES,
    OpenResult,
    ScenarioResult,
    open_of,
    ratio,
    scenario_of,
)

OPEN_AT_ONCE = 100  # as bench.run opens streams (a module the report does not import)
HEAVY_OTHER_CPU = 25.0  # % of a core used by processes outside the benchmark: say it is noisy


def describe_machine(files_limit: int) -> dict[str, Any]:
    """CPU, memory, software versions and the date, as the report shows them."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    return {
        "cpu": models[0] if models else platform.processor() or "unknown",
        "cpus": len(models) or os.cpu_count(),
        "ram_gib": mem_kib / 1024 / 1024,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "redis_py": importlib.metadata.version("redis"),
        "hiredis": _version("hiredis"),
        "load_before": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "files_limit": files_limit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": previous.commit(),  # before the run writes anything
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def redis_version(redis: RedisProcess) -> str:
    with redis.client() as client:
        return str(client.info("server")["redis_version"])


def write(
    path: Path,
    plan: Any,
    machine: dict[str, Any],
    opens: list[OpenResult],
    scenarios: list[ScenarioResult],
    elapsed: float,
    steps: publish_steps.PublishSteps | None = None,
    profiles: list[profiling.Profile] | None = None,
    contact: contact_center.Run | None = None,
) -> None:
    """The markdown report and, beside it, the PNG plot and the key figures (JSON) that the
    next run compares itself with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot = path.with_suffix(".png")
    write_plot(plot, plan.sizes, scenarios)
    figures_path = path.with_suffix(".json")
    measured = previous.figures(opens, scenarios, steps)
    sections = [
        _title(machine, elapsed, plan),
        _headline(opens, scenarios, plan),
        previous.markdown(previous.load(figures_path), machine["date"], machine["commit"], measured),
        _machine_table(machine),
        HOW_TO_RUN,
        _method(plan),
        _open_table(opens, plan),
        *(_load_table(scenarios, layout, load, plan) for layout in plan.layouts for load in LOADS),
        _ratio_tables(opens, scenarios, plan),
        _cluster_section(opens, scenarios, plan, machine),
        nchan_report.markdown(opens, scenarios, plan),
        publish_steps.markdown(steps) if plan.publish_steps else "",
        profiling.markdown(profiles, plan.profile_streams),
        contact_center.markdown(contact.results, contact.plan) if contact is not None else "",
        f"## Plot\n\n![latency and throughput against N]({plot.name})\n",
        _notes(opens, scenarios, plan),
    ]
    path.write_text("\n".join(section for section in sections if section))
    previous.save(figures_path, machine["date"], machine["commit"], measured)


def _title(machine: dict[str, Any], elapsed: float, plan: Any) -> str:
    kind = "the quick smoke run (`--quick`)" if plan.quick else "`make bench`"
    modes = "\n".join(f"- **{mode}**: {MODE_NOTES[mode]}." for mode in plan.modes)
    return (
        "# Benchmarks\n\n"
        f"Written by {kind} on {machine['date']} in {elapsed / 60:.1f} minutes; do not edit by "
        "hand, run it again. The modes, all publishing the same way (same Lua script, history "
        "and ids; on the cluster with SPUBLISH and a clock per slot tag; nchan aside) and "
        "differing in how they subscribe:\n\n"
        f"{modes}\n\nEvery figure is from the same run, side by side, with its ratio "
        "switchboard / baseline (and switchboard / nchan).\n"
    )


def _headline(opens: list[OpenResult], scenarios: list[ScenarioResult], plan: Any) -> str:
    n = 1000 if 1000 in plan.sizes else plan.sizes[-1]
    top = max(plan.sizes)
    plan = _Modes(plan, [m for m in plan.modes if m != CLUSTER])  # the cluster has its own section
    baselines = [m for m in plan.modes if m in COMPARED]
    head = (
        "| | " + " | ".join([*plan.modes, *(f"switchboard / {m}" for m in baselines)]) + " | issue 5 target |"
    )
    rule = "|---|" + "---:|" * (len(plan.modes) + len(baselines)) + "---|"
    rows = [
        _headline_row(
            f"deliveries/s, {n:,} streams, one channel, max rate",
            plan,
            lambda m: scenario_of(scenarios, m, n, "one", "max"),
            "deliveries_per_s",
            lambda s: f"{s.deliveries_per_s:,.0f}",
            "≥ 4 × baseline",
        ),
        _headline_row(
            f"p99 ms, {n:,} streams, one channel, fixed rate",
            plan,
            lambda m: scenario_of(scenarios, m, n, "one", "fixed"),
            "p99_ms",
            lambda s: f"{s.p99_ms:,.1f}",
            "≤ 50 ms",
        ),
        _headline_row(
            f"RSS KiB per idle stream, {top:,} streams (channel per 10)",
            plan,
            lambda m: open_of(opens, m, top, "per10"),
            "rss_per_stream_kib",
            lambda o: _fmt(o.rss_per_stream_kib, 1),
            "≤ 15 KiB",
        ),
        _headline_row(
            f"Redis connections (pub/sub), {top:,} streams (channel per 10)",
            plan,
            lambda m: open_of(opens, m, top, "per10"),
            "redis_connections",
            lambda o: f"{o.redis_connections:,} ({o.pubsub_connections:,})",
            "one pub/sub connection",
        ),
    ]
    return f"## Headline\n\n{head}\n{rule}\n" + "\n".join(rows) + "\n"


class _Modes:
    """A plan seen with other modes."""

    def __init__(self, plan: Any, modes: list[str]) -> None:
        self._plan, self.modes = plan, modes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plan, name)


def _headline_row(
    label: str, plan: Any, pick: Callable[[str], Any], attr: str, show: Callable[[Any], str], target: str
) -> str:
    """One figure for every mode (``pick`` finds a mode's result), its ratios, its target."""
    results = {mode: pick(mode) for mode in plan.modes}
    cells = ["-" if r is None else r.failure or show(r) for r in results.values()]
    ratios = [_ratio_cell(results.get("switchboard"), results[m], attr) for m in plan.modes if m in COMPARED]
    return f"| {label} | " + " | ".join([*cells, *ratios, target]) + " |"


def _machine_table(machine: dict[str, Any]) -> str:
    rows = [
        ("CPU", f"{machine['cpu']} × {machine['cpus']} (from /proc/cpuinfo)"),
        ("RAM", f"{machine['ram_gib']:.1f} GiB"),
        ("kernel", machine["kernel"]),
        ("Python", machine["python"]),
        ("Redis", machine.get("redis", "?")),
        (
            "aiohttp / redis-py / hiredis",
            f"{machine['aiohttp']} / {machine['redis_py']} / {machine['hiredis']}",
        ),
        ("open files limit", f"{machine['files_limit']:,}"),
        ("load average before the run (1 / 5 / 15 min)", machine["load_before"]),
        ("date", machine["date"]),
        ("commit measured", machine["commit"]),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Machine\n\n| | |\n|---|---|\n{body}\n"


HOW_TO_RUN = """## How to run

```sh
make bench                    # the full matrix; writes docs/benchmarks.md and docs/benchmarks.png
make bench ARGS=--quick       # smoke run (100 streams, short loads), report in .tmp/bench/quick/
make bench ARGS=--profile     # the same, plus the server under py-spy (1,000 streams, both layouts)
.venv/bin/python -m bench.run --sizes 100,1000 --modes switchboard,switchboard-cluster   # a subset
.venv/bin/python -m bench.publish_steps [--redis-url redis://127.0.0.1:6379/0]   # publish path only
.venv/bin/python -m bench.contact_center [--quick] [--workers 1,2]   # contact center only; docs/benchmarks-contact-center.md
.venv/bin/python -m bench.previous OLD.results.json --label REV > docs/benchmarks.json   # compare with REV, run on this machine
```

It needs `redis-server` and `redis-cli` on the PATH (`make bench` installs them with apt-get
if missing) and the `bench` extra (matplotlib, py-spy). It starts its own redis-server (no
persistence) on a free loopback port, a 3-master Redis Cluster on other free ports for
switchboard-cluster, and, for every combination of mode, N and layout, a fresh server process
(`python -m bench.serve [--baseline] --insecure ...`), so that memory and connections are
measured from a clean start; every Redis is flushed between combinations. Logs go to
`.tmp/bench/logs/`, raw figures to `.tmp/bench/results.json`.
"""


def _method(plan: Any) -> str:
    return f"""## What is measured

- **Streams**: N ∈ {{{", ".join(f"{n:,}" for n in plan.sizes)}}} SSE streams on
  `GET /chatbot/api/sessions/{{s}}/events`, opened by {plan.receivers} receiver process(es)
  (raw asyncio protocol, HTTP/1.1 chunked, parsing the `id:` / `data:` lines), at most 100
  being opened at once; a stream counts as open when its `connected` event arrives. Layouts:
  **one channel** (all N streams on one session) and **one channel per 10 streams** (N/10
  sessions). The sessions are created (`POST /chatbot/api/sessions`) and taken over once
  (`POST /workbench/api/sessions/{{s}}/takeover`) before the streams open.
- **Loads**, from one publisher process (aiohttp) on
  `POST /workbench/api/sessions/{{s}}/messages`, content `t=<send time> n=<sequence number>`,
  message n to session n mod S: first a **max rate**, {plan.max_concurrency} publisher tasks
  each sending its next message as soon as the last one was answered, for
  {plan.max_seconds:g} s (closed loop: it leaves no backlog behind); then a **fixed rate** of
  {plan.fixed_rate:g} messages/s in all (open loop, round-robin over the sessions) for
  {plan.fixed_seconds:g} s. After publishing, the receivers wait until every stream has every
  message, at most {plan.drain:g} s, or until nothing arrived for {plan.quiet:g} s. The load
  generator's garbage collector is off during a load, so that its pauses do not count as
  the server's latency.
- **Latency** publish→receive: receive time minus the send time in the content (same
  machine, same clock), over every delivery; p50 / p90 / p99 / max.
- **Deliveries/s**: messages received by all streams together, divided by the time from the
  first publish to the last delivery (so a backlog drained after publishing counts against it).
- **Missing / duplicates**: per stream, by sequence number, against the messages whose publish
  was answered 200 (missing = not received by the end of the wait above, marked *late* when
  events were still arriving as it ended or when the server still used over half a core in
  the second after it: most likely late, not lost; **cut** = streams the server ended during
  the load).
  A publish request gives up after 10 s; such a message is not expected, but when it reaches
  the streams all the same it shows as "+N of timed-out publishes".
- **Publishes/s**: publish requests answered 200 per second, and their request p50 / p99.
- **RSS per stream**: the server's VmRSS (/proc/<pid>/status) after opening N idle streams,
  minus before, divided by N. **Redis connections**: `CLIENT LIST` with the N streams open
  (the harness's own connection not counted), and in brackets those subscribed to a channel;
  the others are the server's command pool (at most 64 connections, but for baseline-pool),
  filled by the burst of stream opens. On the cluster: summed over its three nodes (the
  server's cluster client has a pool of up to 64 per node; the cluster bus between nodes is
  not counted).
- **CPU**: utime + stime (/proc/<pid>/stat) over the load (publishing and draining), as % of
  one core, for the server, Redis (on the cluster: its three nodes together), the receiver(s)
  and the publisher; **machine** is all busy
  CPU on the machine (/proc/stat, 200% = both cores), so the gap to the sum of ours is other work.
"""


def _open_table(opens: list[OpenResult], plan: Any) -> str:
    lines = [
        "## Results\n",
        "### Opening N idle streams\n",
        "| N | layout | mode | open | time to open (s) | RSS per stream (KiB) | Redis connections (pub/sub) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for n in plan.sizes:
        for layout in plan.layouts:
            for mode in plan.modes:
                o = open_of(opens, mode, n, layout)
                if o is None:
                    continue
                if o.failure:
                    lines.append(f"| {n:,} | {LAYOUTS[layout]} | {mode} | {o.failure} | | | |")
                    continue
                lines.append(
                    f"| {n:,} | {LAYOUTS[layout]} | {mode} | {o.opened:,} | {o.open_seconds:.1f} | "
                    f"{_fmt(o.rss_per_stream_kib, 1)} | {_fmt(o.redis_connections, 0)} "
                    f"({_fmt(o.pubsub_connections, 0)}) |"
                )
    return "\n".join(lines) + "\n"


LOAD_HEADER = (
    (
        "| N | mode | publishes/s (req p50 / p99 ms) | deliveries | deliveries/s | p50 ms | p90 ms | "
        "p99 ms | max ms | missing | dup | cut | CPU % server / Redis / receiver / publisher / machine |"
    ),
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
)


def _load_table(scenarios: list[ScenarioResult], layout: str, load: str, plan: Any) -> str:
    lines = [f"### {LAYOUTS[layout].capitalize()}, {LOADS[load]}\n", *LOAD_HEADER]
    for n in plan.sizes:
        for mode in plan.modes:
            s = scenario_of(scenarios, mode, n, layout, load)
            if s is None:
                continue
            if s.failure:
                lines.append(f"| {n:,} | {mode} | {s.failure} |" + " |" * 10)
                continue
            receivers = "+".join(f"{c:.0f}" for c in s.receiver_cpu)
            flag = " ⚠" if s.loadgen_bound else ""
            lines.append(
                f"| {n:,} | {mode} | {s.publish_rps:,.0f} ({s.request_p50_ms:.0f} / {s.request_p99_ms:.0f}) | "
                f"{_deliveries_cell(s)} | {s.deliveries_per_s:,.0f} | {s.p50_ms:.1f} | "
                f"{s.p90_ms:.1f} | {s.p99_ms:.1f} | {s.max_ms:.0f} | {_missing_cell(s)} | {s.duplicates:,} | "
                f"{s.cut:,} | {s.server_cpu:.0f} / {s.redis_cpu:.0f} / {receivers}{flag} / "
                f"{s.publisher_cpu:.0f} / {s.machine_cpu:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _deliveries_cell(s: ScenarioResult) -> str:
    """Expected deliveries received, of those expected; plus those of publishes that timed out
    on the publisher's side but reached the streams all the same."""
    cell = f"{s.expected - s.missing:,} of {s.expected:,}"
    return cell + (f" (+{s.unexpected:,} of timed-out publishes)" if s.unexpected else "")


def _missing_cell(s: ScenarioResult) -> str:
    """Missing events, marked late when they were still arriving as the wait ended."""
    return f"{s.missing:,} late" if s.missing and s.late else f"{s.missing:,}"


RATIO_FIGURES = (
    ("publish_rps", "publishes/s"),
    ("deliveries_per_s", "deliveries/s"),
    ("p50_ms", "p50"),
    ("p99_ms", "p99"),
    ("max_ms", "max"),
    ("server_cpu", "server CPU"),
)
OPEN_FIGURES = (
    ("open_seconds", "time to open"),
    ("rss_per_stream_kib", "RSS/stream"),
    ("redis_connections", "Redis connections"),
    ("pubsub_connections", "pub/sub connections"),
)


RATIO_LEGEND = (
    "Above 1 is better for publishes/s and deliveries/s; below 1 is better for latency, CPU, "
    "time, memory and connections. `-` where a mode failed; rows where it failed throughout "
    "are left out.\n"
)


def _ratio_tables(opens: list[OpenResult], scenarios: list[ScenarioResult], plan: Any) -> str:
    baselines = [m for m in plan.modes if m in COMPARED]
    if "switchboard" not in plan.modes or not baselines:
        return "## Ratios\n\nNo pair of modes was run: no ratios.\n"
    lines = ["## Ratios switchboard / baseline, switchboard / nchan\n", RATIO_LEGEND]
    for baseline in baselines:
        lines += [
            f"### switchboard / {baseline}\n",
            "| layout | load | N | " + " | ".join(label for _, label in RATIO_FIGURES) + " |",
            "|---|---|---:|" + "---:|" * len(RATIO_FIGURES),
        ]
        for layout in plan.layouts:
            for load in LOADS:
                for n in plan.sizes:
                    ours = scenario_of(scenarios, "switchboard", n, layout, load)
                    theirs = scenario_of(scenarios, baseline, n, layout, load)
                    cells = [_ratio_cell(ours, theirs, attr) for attr, _ in RATIO_FIGURES]
                    if any(c != "-" for c in cells):
                        lines.append(
                            f"| {LAYOUTS[layout]} | {LOADS[load]} | {n:,} | " + " | ".join(cells) + " |"
                        )
        lines += [
            "",
            "| layout | N | " + " | ".join(label for _, label in OPEN_FIGURES) + " |",
            "|---|---:|" + "---:|" * len(OPEN_FIGURES),
        ]
        for layout in plan.layouts:
            for n in plan.sizes:
                our_open, their_open = (
                    open_of(opens, "switchboard", n, layout),
                    open_of(opens, baseline, n, layout),
                )
                cells = [_ratio_cell(our_open, their_open, attr) for attr, _ in OPEN_FIGURES]
                if any(c != "-" for c in cells):
                    lines.append(f"| {LAYOUTS[layout]} | {n:,} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


CLUSTER_FIGURES = (
    ("publish_rps", "publishes/s", 0),
    ("deliveries_per_s", "deliveries/s", 0),
    ("p50_ms", "p50 ms", 1),
    ("p99_ms", "p99 ms", 1),
    ("missing", "missing", 0),
    ("server_cpu", "server CPU %", 0),
    ("redis_cpu", "Redis CPU %", 0),
)
CLUSTER_PAIR = ("switchboard", CLUSTER)


def _cluster_section(
    opens: list[OpenResult], scenarios: list[ScenarioResult], plan: Any, machine: dict[str, Any]
) -> str:
    """switchboard-cluster beside switchboard, at the N the cluster ran, with ratios."""
    if CLUSTER not in plan.modes:
        return ""
    started = machine.get("cluster_start")
    ready = f", ready in {started:.1f} s" if started else ""
    sizes = ", ".join(f"{n:,}" for n in plan.cluster_sizes)
    lines = [
        "## Redis Cluster\n",
        (
            "**switchboard-cluster** is the same server started with `--redis-url "
            "redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`: a local cluster of 3 masters, "
            f"no replicas (`bench/cluster.py`{ready}), sharded pub/sub (SSUBSCRIBE / SPUBLISH), one "
            "pub/sub connection per primary, commands routed by slot by redis-py's cluster client. "
            f"It runs at N = {sizes} only, beside **switchboard** on one Redis in the same run. The "
            "three nodes share the machine's two cores with everything else: this shows what the "
            "cluster costs the server, not what spreading Redis over machines would gain. Ratio = "
            "cluster / single Redis (above 1 is better for publishes/s and deliveries/s, below 1 for "
            "the rest).\n"
        ),
        "| N | layout | load | mode | " + " | ".join(label for _, label, _ in CLUSTER_FIGURES) + " |",
        "|---:|---|---|---|" + "---:|" * len(CLUSTER_FIGURES),
    ]
    for n in plan.cluster_sizes:
        for layout in plan.layouts:
            for load in LOADS:
                pair = [scenario_of(scenarios, mode, n, layout, load) for mode in CLUSTER_PAIR]
                for mode, s in zip(CLUSTER_PAIR, pair, strict=True):
                    if s is None:
                        continue
                    cells = (
                        [s.failure] + [""] * (len(CLUSTER_FIGURES) - 1)
                        if s.failure
                        else [f"{getattr(s, a):,.{d}f}" for a, _, d in CLUSTER_FIGURES]
                    )
                    lines.append(
                        f"| {n:,} | {LAYOUTS[layout]} | {LOADS[load]} | {mode} | " + " | ".join(cells) + " |"
                    )
                if pair[0] is not None and pair[1] is not None:
                    cells = [
                        "" if a == "missing" else _ratio_cell(pair[1], pair[0], a)
                        for a, _, _ in CLUSTER_FIGURES
                    ]
                    lines.append("| | | | *cluster / single* | " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "| N | layout | mode | time to open (s) | RSS per stream (KiB) | Redis connections "
            "(pub/sub), all nodes |"
        ),
        "|---:|---|---|---:|---:|---:|",
    ]
    for n in plan.cluster_sizes:
        for layout in plan.layouts:
            opened = [open_of(opens, mode, n, layout) for mode in CLUSTER_PAIR]
            for mode, o in zip(CLUSTER_PAIR, opened, strict=True):
                if o is None:
                    continue
                if o.failure:
                    lines.append(f"| {n:,} | {LAYOUTS[layout]} | {mode} | {o.failure} | | |")
                    continue
                lines.append(
                    f"| {n:,} | {LAYOUTS[layout]} | {mode} | {o.open_seconds:.1f} | "
                    f"{_fmt(o.rss_per_stream_kib, 1)} | {_fmt(o.redis_connections, 0)} "
                    f"({_fmt(o.pubsub_connections, 0)}) |"
                )
            if opened[0] is not None and opened[1] is not None:
                ratios = [
                    _ratio_cell(opened[1], opened[0], a)
                    for a in ("open_seconds", "rss_per_stream_kib", "redis_connections", "pubsub_connections")
                ]
                lines.append(
                    f"| | | *cluster / single* | {ratios[0]} | {ratios[1]} | {ratios[2]} ({ratios[3]}) |"
                )
    retried = _retried_notes(opens)
    if retried:
        lines += ["", *retried]
    return "\n".join(lines) + "\n"


def _retried_notes(opens: list[OpenResult]) -> list[str]:
    """Combinations measured on a second try, opening fewer streams at once."""
    notes = [
        f"- {o.mode}, {o.n:,} streams, {LAYOUTS[o.layout]}: opening {OPEN_AT_ONCE} streams at "
        f"once failed ({o.retried_after.removeprefix('failed: ')}); its figures are from a "
        f"second try on a fresh server, opening at most {o.at_once} at once."
        for o in opens
        if o.retried_after
    ]
    if any("MaxConnectionsError" in (o.retried_after or "") for o in opens):
        notes.append(CLUSTER_POOL)
    return notes


CLUSTER_POOL = (
    "- MaxConnectionsError: the server's Redis Cluster client (`app/backends.py` "
    "`cluster_clients`, `max_connections=64` per node) raises it when every connection to a "
    "node is busy, instead of waiting for one as the single-Redis `BlockingConnectionPool` "
    "does; the session store answers 503. A burst of stream opens on sessions of one node "
    "(one channel: every stream on one slot) is enough."
)


def _ratio_cell(ours: Any, theirs: Any, attr: str) -> str:
    if ours is None or theirs is None or ours.failure or theirs.failure:
        return "-"
    r = ratio(getattr(ours, attr), getattr(theirs, attr))
    return "-" if r is None else f"{r:.2f}"


def _notes(opens: list[OpenResult], scenarios: list[ScenarioResult], plan: Any) -> str:
    lines = ["## Notes\n", *scaled_down(plan, scenarios), ""]
    lines += ["What limited what, in this run:", ""]
    lines += _limit_notes(opens, scenarios) or ["- nothing stood out."]
    lines += _overload_notes(scenarios, plan)
    return "\n".join(lines) + "\n"


def scaled_down(plan: Any, scenarios: list[ScenarioResult]) -> list[str]:
    """What this run left out or made smaller than a real load test would."""
    top = max(plan.sizes)
    return [
        "Scaled down to fit a 2-core machine and about a quarter of an hour for the whole run:",
        "",
        (
            "- the load generator (one receiver and one publisher process) shares the two cores "
            "with the server and Redis; a dedicated load machine would take it out of the "
            "measurement, here its CPU is reported beside the server's and ⚠ marks a "
            "load-generator process near a full core, where it may have set the pace rather "
            "than the server;"
        ),
        (
            f"- loads last seconds, not minutes (fixed rate {plan.fixed_seconds:g} s, max rate "
            f"{plan.max_seconds:g} s): enough for thousands of messages and up to millions of "
            "deliveries, not for steady-state effects such as memory growth or history "
            "trimming over hours;"
        ),
        _fixed_rate_note(plan, scenarios),
        (
            f"- at most {top:,} streams, one server process per mode, no reconnects (a stream "
            "the server ends is counted as cut, not reopened);"
        ),
        (
            "- each combination runs once; the machine may be shared with other work (the "
            "**machine** CPU column shows how much), so read the ratios rather than the "
            "absolute figures."
        ),
    ]


def _fixed_rate_note(plan: Any, scenarios: list[ScenarioResult]) -> str:
    channels = max(plan.sizes) // 10
    wanted = plan.fixed_rate * channels
    best = max((s.publish_rps for s in scenarios if not s.failure), default=0.0)
    beyond = f", more than the {best:,.0f}/s the best mode accepted here" if wanted > best else ""
    return (
        f"- the fixed rate is {plan.fixed_rate:g} messages/s in all, not per channel (the "
        f"latency case of the issue's target): {plan.fixed_rate:g}/s on each of {channels:,} "
        f"channels would be {wanted:,.0f} publishes/s{beyond};"
    )


def _overload_notes(scenarios: list[ScenarioResult], plan: Any) -> list[str]:
    """Fixed-rate loads that asked for more deliveries per second than the mode's max-rate
    load achieved: their latency measures a growing backlog, not the delivery path."""
    notes = []
    for s in scenarios:
        best = scenario_of(scenarios, s.mode, s.n, s.layout, "max")
        if s.load != "fixed" or s.failure or best is None or best.failure:
            continue
        demand = plan.fixed_rate * (s.n if s.layout == "one" else min(s.n, 10))
        if demand > best.deliveries_per_s:
            notes.append(
                f"- {_label(s)} asked for {demand:,.0f} deliveries/s, more than the "
                f"{best.deliveries_per_s:,.0f}/s of its max rate: overloaded, its latency "
                "is the time spent in a growing backlog."
            )
    return notes


def _limit_notes(opens: list[OpenResult], scenarios: list[ScenarioResult]) -> list[str]:
    """Failures, bottlenecks and anomalies, from the figures of this run."""
    notes = [f"- {o.mode}, {o.n:,} streams, {LAYOUTS[o.layout]}: {o.failure}." for o in opens if o.failure]
    if any(o.mode == "baseline" and o.failure and "HTTP 503" in o.failure for o in opens):
        notes.append(BASELINE_503)
    notes += [
        f"- the {o.mode} server with {o.n:,} streams ({LAYOUTS[o.layout]}) {o.stopped}."
        for o in opens
        if o.stopped
    ]
    notes += _retried_notes(opens)
    ran = [s for s in scenarios if not s.failure]
    notes += [f"- {_label(s)}: {s.failure}." for s in scenarios if s.failure and not _open_failed(opens, s)]
    notes += _bottleneck_notes(ran)
    for s in ran:
        if s.missing or s.duplicates or s.cut or s.publish_errors:
            late = ""
            if s.late and s.missing:
                late = (
                    " (late: still arriving when the wait ended"
                    if s.busy_after is None
                    else f" (late: the server still used {s.busy_after:.0f}% of a core after the wait"
                )
                late += ", so most likely not lost)"
            notes.append(
                f"- {_label(s)}: {s.missing:,} missing{late}, {s.duplicates:,} duplicates, "
                f"{s.cut:,} streams cut, publish errors {s.publish_errors or 'none'}."
            )
    return notes


BASELINE_503 = (
    "- baseline: its per-stream pub/sub connections come from redis-py's default pool of 100 "
    "connections; past that redis-py raises `MaxConnectionsError('Too many connections')`, which "
    'the server answers with 503 "state store unavailable" (the original design\'s failure past '
    "about 100 streams). baseline-pool measures the same design without that limit."
)


def _bottleneck_notes(ran: list[ScenarioResult]) -> list[str]:
    notes = []
    bound = [s for s in ran if s.server_cpu >= 90 and not s.loadgen_bound]
    if bound:
        notes.append(_cpu_bound_note(ran, bound))
    gen = [s for s in ran if s.loadgen_bound]
    busiest = max((c for s in ran for c in [*s.receiver_cpu, s.publisher_cpu]), default=0.0)
    if gen:
        notes += [
            f"- {_label(s)}: a load-generator process was near a full core (receiver "
            f"{'+'.join(f'{c:.0f}' for c in s.receiver_cpu)}%, publisher {s.publisher_cpu:.0f}%): "
            "it may have set the pace."
            for s in gen
        ]
    else:
        notes.append(
            f"- the load generator was not the bottleneck: its busiest process used at "
            f"most {busiest:.0f}% of a core."
        )
    redis_peak = max((s.redis_cpu for s in ran), default=0.0)
    notes.append(f"- Redis used at most {redis_peak:.0f}% of a core: it never limited anything.")
    for s in ran:
        ours = s.server_cpu + s.redis_cpu + sum(s.receiver_cpu) + s.publisher_cpu
        if s.machine_cpu - ours > HEAVY_OTHER_CPU:
            notes.append(
                f"- {_label(s)}: other work on the machine used about "
                f"{s.machine_cpu - ours:.0f}% of a core: noisy."
            )
    return notes


def _cpu_bound_note(ran: list[ScenarioResult], bound: list[ScenarioResult]) -> str:
    """Which loads the server's one core limited, shortened when it is every max-rate load."""
    max_rate = [s for s in ran if s.load == "max"]
    every_max = bool(max_rate) and all(s in bound for s in max_rate)
    others = [s for s in bound if not (every_max and s.load == "max")]
    parts = ["every max-rate load"] if every_max else []
    parts += [_label(s) for s in others]
    return (
        f"- the server process was CPU-bound (≥ 90% of its one core) in {len(bound)} of "
        f"{len(ran)} loads: " + "; ".join(parts) + "."
    )


def _label(s: ScenarioResult) -> str:
    return f"{s.mode} {s.n:,} {LAYOUTS[s.layout]} {LOADS[s.load]}"


def _open_failed(opens: list[OpenResult], s: ScenarioResult) -> bool:
    o = open_of(opens, s.mode, s.n, s.layout)
    return o is not None and o.failure is not None


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
