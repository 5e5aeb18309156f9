"""docs/benchmarks.png: latency (p50/p99, fixed rate) and throughput (deliveries/s, max rate)
against N, every mode, one row per layout."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display here
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from bench.results import CLUSTER, LAYOUTS, MODES, NCHAN, ScenarioResult

STYLE = {
    "switchboard": "tab:blue",
    CLUSTER: "tab:green",
    "baseline": "tab:orange",
    "baseline-pool": "tab:red",
    NCHAN: "tab:gray",
}
MARKER = {"switchboard": "o", CLUSTER: "^", "baseline": "D", "baseline-pool": "s", NCHAN: "x"}


def write_plot(path: Path, sizes: tuple[int, ...], scenarios: list[ScenarioResult]) -> None:
    """Two panels per layout; failed points are left out (the table says why)."""
    layouts = [layout for layout in LAYOUTS if any(s.layout == layout for s in scenarios)]
    fig, axes = plt.subplots(len(layouts), 2, figsize=(11, 4.2 * len(layouts)), squeeze=False)
    for row, layout in zip(axes, layouts, strict=True):
        _latency_panel(row[0], layout, scenarios)
        _throughput_panel(row[1], layout, scenarios)
        for ax in row:
            ax.set_xscale("log")
            ax.set_xticks(list(sizes), [f"{n:,}" for n in sizes])
            ax.set_xlabel("open streams (N)")
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, framealpha=0.6)
    fig.suptitle(
        "switchboard (one Redis; switchboard-cluster: a 3-master cluster, at one N) vs baseline "
        "(one pub/sub connection per stream), nchan for reference; failed points left out",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _points(
    scenarios: list[ScenarioResult], mode: str, layout: str, load: str, attr: str
) -> tuple[list[int], list[float]]:
    chosen = sorted(
        (
            s
            for s in scenarios
            if (s.mode, s.layout, s.load) == (mode, layout, load) and not s.failure and s.deliveries
        ),
        key=lambda s: s.n,
    )
    return [s.n for s in chosen], [getattr(s, attr) for s in chosen]


def _latency_panel(ax: Axes, layout: str, scenarios: list[ScenarioResult]) -> None:
    for mode in MODES:
        for attr, style in (("p50_ms", "--"), ("p99_ms", "-")):
            xs, ys = _points(scenarios, mode, layout, "fixed", attr)
            if xs:
                ax.plot(
                    xs,
                    ys,
                    style,
                    marker=MARKER[mode],
                    fillstyle="none" if style == "--" else "full",
                    color=STYLE[mode],
                    label=f"{mode} {attr[:3]}",
                )
    ax.set_yscale("log")
    _plain_log_labels(ax)
    ax.set_ylabel("publish→receive latency (ms)")
    ax.set_title(f"{LAYOUTS[layout]}: latency at the fixed rate")


def _plain_log_labels(ax: Axes) -> None:
    """Log-scale labels as plain numbers; minor ticks labelled too on a short range, only the
    2s and 5s on a long one."""
    low, high = ax.get_ylim()
    short = high / max(low, 1e-12) < 20

    def minor(value: float, _: int) -> str:
        leading = f"{value:e}"[0]
        return f"{value:,g}" if short or leading in "25" else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _throughput_panel(ax: Axes, layout: str, scenarios: list[ScenarioResult]) -> None:
    for mode in MODES:
        xs, ys = _points(scenarios, mode, layout, "max", "deliveries_per_s")
        if xs:
            ax.plot(xs, ys, "-", marker=MARKER[mode], color=STYLE[mode], label=mode)
    ax.set_ylabel("deliveries/s")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_title(f"{LAYOUTS[layout]}: throughput at the max rate")
