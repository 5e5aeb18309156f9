"""This run against the previous one: the key figures of switchboard are kept beside the report
(docs/benchmarks.json) and each run compares itself with what it finds there before replacing
it, so a refactoring shows at once whether it moved anything beyond noise.

Figures from two machines do not compare (a host twice as slow halves every figure, the
baseline's too). To compare two revisions, run both on one machine: the older one with
``--out`` (its raw figures land beside that report), then seed the comparison from them and
run ``make bench``::

    python -m bench.previous OLD/benchmarks.results.json --label "before X" > docs/benchmarks.json
"""

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.publish_steps import PublishSteps
from bench.results import CLUSTER, OpenResult, ScenarioResult, open_of, scenario_of

SWITCHBOARD = "switchboard"
# Run to run on this shared 2-core machine, figures of nearly the same code moved by this much
# (deliveries/s at 1,000 streams: 177,401 then 162,442 in two reports of issue 5).
NOISE = 0.15


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    label: str
    higher_is_better: bool
    digits: int


FIGURES = (
    Figure("deliveries_1000_one_max", "deliveries/s, 1,000 streams, one channel, max rate", True, 0),
    Figure("p99_ms_1000_one_fixed", "p99 ms, 1,000 streams, one channel, 20 msg/s", False, 1),
    Figure("deliveries_5000_one_max", "deliveries/s, 5,000 streams, one channel, max rate", True, 0),
    Figure("p99_ms_5000_one_fixed", "p99 ms, 5,000 streams, one channel, 20 msg/s", False, 1),
    Figure("rss_kib_per_stream_5000", "RSS KiB per idle stream, 5,000 streams (channel per 10)", False, 1),
    Figure("open_seconds_5000", "seconds to open 5,000 streams (channel per 10)", False, 2),
    Figure(
        "cluster_deliveries_1000_one_max",
        "cluster: deliveries/s, 1,000 streams, one channel, max rate",
        True,
        0,
    ),
    Figure("publish_path_us", "publish path in process, µs per agent message (sum of steps)", False, 0),
)


def figures(
    opens: list[OpenResult], scenarios: list[ScenarioResult], steps: PublishSteps | None
) -> dict[str, float]:
    """The key figures of this run (those it measured)."""

    def scenario(mode: str, n: int, load: str, value: Callable[[ScenarioResult], float]) -> float | None:
        found = scenario_of(scenarios, mode, n, "one", load)
        return None if found is None or found.failure else value(found)

    def opened(n: int, value: Callable[[OpenResult], float]) -> float | None:
        found = open_of(opens, SWITCHBOARD, n, "per10")
        return None if found is None or found.failure else value(found)

    measured = {
        "deliveries_1000_one_max": scenario(SWITCHBOARD, 1000, "max", lambda s: s.deliveries_per_s),
        "p99_ms_1000_one_fixed": scenario(SWITCHBOARD, 1000, "fixed", lambda s: s.p99_ms),
        "deliveries_5000_one_max": scenario(SWITCHBOARD, 5000, "max", lambda s: s.deliveries_per_s),
        "p99_ms_5000_one_fixed": scenario(SWITCHBOARD, 5000, "fixed", lambda s: s.p99_ms),
        "rss_kib_per_stream_5000": opened(5000, lambda o: o.rss_per_stream_kib or 0.0),
        "open_seconds_5000": opened(5000, lambda o: o.open_seconds),
        "cluster_deliveries_1000_one_max": scenario(CLUSTER, 1000, "max", lambda s: s.deliveries_per_s),
        "publish_path_us": steps.total_us if steps is not None and steps.failure is None else None,
    }
    return {key: value for key, value in measured.items() if value is not None}


def commit() -> str:
    """The commit measured (with "+changes" when the work tree differs from it)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def load(path: Path) -> dict[str, Any] | None:
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) and isinstance(previous.get("figures"), dict) else None


def save(path: Path, date: str, revision: str, measured: dict[str, float]) -> None:
    path.write_text(json.dumps({"date": date, "commit": revision, "figures": measured}, indent=1) + "\n")


def from_raw(raw: dict[str, Any]) -> dict[str, float]:
    """The key figures of a run's raw results (``results.json``, or ``*.results.json`` beside
    a report written with ``--out``), by the same rules as a live run's."""

    def build(cls: Any, item: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in item.items() if key in names})

    opens = [build(OpenResult, item) for item in raw.get("opens", [])]
    scenarios = [build(ScenarioResult, item) for item in raw.get("scenarios", [])]
    measured = figures(opens, scenarios, None)
    steps = raw.get("publish_steps") or {}
    if steps.get("steps") and not steps.get("failure"):
        measured["publish_path_us"] = sum(step["mean_us"] for step in steps["steps"])
    return measured


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="seed docs/benchmarks.json from a run's raw results")
    parser.add_argument("results", type=Path, help="raw results of a run (JSON)")
    parser.add_argument("--label", required=True, help="what was measured (a revision, in words)")
    args = parser.parse_args(argv)
    raw = json.loads(args.results.read_text())
    date = raw.get("machine", {}).get("date", "?")
    json.dump({"date": date, "commit": args.label, "figures": from_raw(raw)}, sys.stdout, indent=1)
    sys.stdout.write("\n")


def markdown(previous: dict[str, Any] | None, date: str, revision: str, measured: dict[str, float]) -> str:
    """The comparison section; empty when there is nothing to compare with."""
    if previous is None:
        return ""
    before: dict[str, float] = previous["figures"]
    rows = []
    for figure in FIGURES:
        old, new = before.get(figure.key), measured.get(figure.key)
        if old is None or new is None:
            continue
        ratio = new / old if old else float("inf")
        better = ratio > 1 if figure.higher_is_better else ratio < 1
        verdict = "within noise" if abs(ratio - 1) <= NOISE else ("better" if better else "worse")
        rows.append(
            f"| {figure.label} | {old:,.{figure.digits}f} | {new:,.{figure.digits}f} | "
            f"{ratio:.2f} | {verdict} |"
        )
    if not rows:
        return ""
    return (
        "## Against the previous run\n\n"
        f"Switchboard's key figures in the previous report ({previous.get('date', '?')}, commit "
        f"`{previous.get('commit', '?')}`) and in this one ({date}, commit `{revision}`). Run to run "
        f"on one machine, the same code moves by up to ±{NOISE:.0%} here (a shared 2-core machine, "
        "the load generator on the same cores): only a larger move is a change. Figures from two "
        "machines do not compare (see `bench/previous.py` for comparing two revisions on one).\n\n"
        "| | previous | this run | ratio | |\n|---|---:|---:|---:|---|\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
