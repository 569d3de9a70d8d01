"""`ferry bench report DIR`: one markdown report, with PNG plots, from the JSON results the bench
commands wrote into DIR (`--out DIR`). Every figure is a ratio against a baseline measured in
the same run; the report says which baseline and which command produced it."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib as mpl

from ferry.bench.probe import summary

mpl.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

Cell = str | int | float


@dataclass
class Section:
    title: str
    command: str
    text: str
    headers: list[str]
    rows: list[list[Cell]]
    plots: list[str] = field(default_factory=list)  # PNG file names, next to report.md
    notes: list[str] = field(default_factory=list)


def save(out: Path, name: str, data: Any) -> Path:
    """Write one bench's results as DIR/<name>.json (the report reads them back)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def build(out: Path) -> Path:
    """Write DIR/report.md (and its plots) from whatever results DIR holds."""
    sections = [
        maker(json.loads((out / f"{name}.json").read_text()), out)
        for name, maker in SECTIONS.items()
        if (out / f"{name}.json").is_file()
    ]
    if not sections:
        raise FileNotFoundError(f"no bench results in {out} (run `ferry bench ... --out {out}`)")
    path = out / "report.md"
    path.write_text(render(sections))
    return path


def render(sections: Sequence[Section]) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Ferry benchmark report ({stamp})", ""]
    for s in sections:
        lines += [f"## {s.title}", "", s.text, "", f"Command: `{s.command}`", ""]
        lines += markdown_table(s.headers, s.rows)
        lines += [""] + [f"- {note}" for note in s.notes] + ([""] if s.notes else [])
        lines += [f"![{s.title}]({plot})\n" for plot in s.plots]
    return "\n".join(lines).rstrip() + "\n"


def markdown_table(headers: list[str], rows: list[list[Cell]]) -> list[str]:
    def cell(value: Cell) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]


# -- planner ------------------------------------------------------------------------------------


def planner_section(results: list[dict[str, Any]], out: Path) -> Section:
    rows: list[list[Cell]] = [
        [
            r["scenario"]["name"],
            r["scenario"]["hosts"],
            r["scenario"]["instances"],
            f"{r['planner']['seconds'] * 1000:.0f}",
            f"{r['greedy']['seconds'] * 1000:.0f}",
            r["time_ratio"],
            r["planner"]["balance"],
            r["greedy"]["balance"],
        ]
        for r in results
    ]
    names = [r["scenario"]["name"] for r in results]
    plot = _bars(
        out / "planner-balance.png",
        names,
        {
            "planner": [r["planner"]["balance"] for r in results],
            "greedy": [r["greedy"]["balance"] for r in results],
        },
        "max destination utilization / lower bound",
        "Balance after a drain (1.0 = perfectly spread)",
    )
    return Section(
        "Evacuation planner: time and balance",
        "ferry bench planner --out DIR",
        "The planner against a one-at-a-time greedy loop over the same scheduler, on the same "
        "synthetic cluster in the same run. Balance: the largest destination utilization "
        "after the drain over the level perfectly spread load would reach.",
        [
            "scenario",
            "hosts",
            "instances",
            "planner ms",
            "greedy ms",
            "time planner/greedy",
            "balance planner",
            "balance greedy",
        ],
        rows,
        [plot],
    )


# -- single migrations --------------------------------------------------------------------------


def migration_section(results: list[dict[str, Any]], out: Path) -> Section:
    def median(r: dict[str, Any], key: str) -> float:
        return float(statistics.median(s[key] for s in r["samples"]))

    def spread(r: dict[str, Any], key: str) -> str:
        # results written before the summaries were added: from the samples
        figures = r.get(key) or summary([float(s[key]) for s in r["samples"]])
        return "/".join(f"{figures[k]:.0f}" for k in ("median", "p99", "max"))

    probe = results[0].get("probe_interval_ms", 20) if results else 10
    rows: list[list[Cell]] = [
        [
            r["scenario"]["name"],
            r["scenario"]["ram_mb"],
            r["scenario"]["dirty_mibps"],
            len(r["samples"]),
            r["minimum_s"],
            median(r, "wall_s"),
            r["ratio_to_minimum"],
            spread(r, "downtime_ms"),
            spread(r, "blackout_ms"),
            spread(r, "silence_ms") if "silence_ms" in r else "-",
        ]
        for r in results
    ]
    labels = [r["scenario"]["name"] for r in results]
    plot = _spread(
        out / "migration-blackout.png",
        labels,
        [[float(s["blackout_ms"]) for s in r["samples"]] for r in results],
        "ms",
        f"Blackout per migration ({probe:.0f} ms prober)",
    )
    return Section(
        "Live migration of one guest",
        "ferry bench migration --dir LAB --out DIR",
        "Instances of the lab image (root disk on shared storage, DHCP address) migrated back "
        "and forth (real QEMU in the lab, TLS on, the default convergence policy). Minimum: "
        "guest memory / the link's TCP throughput measured in the same run; wall and stream "
        f"times are medians. Blackout: the longest run of lost probes of a {probe:.0f} ms "
        "prober per migration, times the interval; silence: the longest time between two of its "
        "answers (wall clock); downtime: QEMU's own (query-migrate); each median/p99/max over "
        "the runs.",
        [
            "scenario",
            "RAM MiB",
            "dirty MiB/s",
            "runs",
            "minimum s",
            "wall s",
            "stream / minimum",
            "downtime ms median/p99/max",
            "blackout ms median/p99/max",
            "silence ms median/p99/max",
        ],
        rows,
        [plot],
    )


# -- lab drain ----------------------------------------------------------------------------------


def _drain_row(r: dict[str, Any]) -> list[Cell]:
    return [
        r.get("workload", "idle"),
        r["mode"],
        r["wall_s"],
        f"{r['moved_mib']:.0f} / {r.get('disk_mib', 0):.0f}",
        r["bound_s"],
        r["ratio_to_bound"],
        r["ratio_to_one_at_a_time"] if r["ratio_to_one_at_a_time"] is not None else "-",
        "/".join(f"{r['blackout_ms'][k]:.0f}" for k in ("median", "p99", "max")),
        "/".join(f"{r['silence_ms'][k]:.0f}" for k in ("median", "p99", "max"))
        if "silence_ms" in r
        else "-",
        r.get("throughput_to_link") or "-",
    ]


DRAIN_HEADERS = [
    "workload",
    "mode",
    "drain s",
    "moved MiB / of which disk",
    "bound s",
    "x bound",
    "x one-at-a-time",
    "blackout ms median/p99/max",
    "silence ms median/p99/max",
    "migration throughput / link",
]


def drain_section(report: dict[str, Any], out: Path, *, disks: bool = False) -> Section:
    """The lab drain's runs; `disks`: those of the disk workloads (local storage)."""
    runs: list[dict[str, Any]] = report["runs"]
    probe = report.get("probe_interval_ms", 20)
    stem = "drain-disks" if disks else "drain"
    labels = [f"{r.get('workload', 'idle')}\n{r['mode']}" for r in runs]
    times = _bars(
        out / f"{stem}-time.png",
        labels,
        {"drain": [r["wall_s"] for r in runs], "physical bound": [r["bound_s"] for r in runs]},
        "seconds",
        "Drain time against the physical bound",
    )
    blackouts = _spread(
        out / f"{stem}-blackout.png",
        labels,
        [r["blackouts_ms"] for r in runs],
        "ms",
        f"Blackout per instance ({probe:.0f} ms prober)",
    )
    where = (
        "Local disks: each guest's disk holds data to copy, moved live with it (NBD over TLS), "
        "the guest idle or writing to its disk. "
        if disks
        else ""
    )
    return Section(
        "Lab drain of local disks: real QEMU, shaped links"
        if disks
        else "Lab drain: real QEMU, shaped links",
        "ferry bench drain --dir LAB --workloads disk-idle,disk-writing --out DIR"
        if disks
        else "ferry bench drain --dir LAB --workloads idle,dirtying --out DIR",
        f"{where}A host's guests drained live by Ferry and, as the baseline, by one migration "
        "at a time (max_parallel=1, max_outbound=1, prepare_ahead=0: a client-side loop), on the "
        "same guests in the same run. Physical bound: bytes the drain moved (RAM and disks) / "
        "the source link's TCP throughput measured in the run. Blackout: longest run of lost "
        f"probes of a {probe:.0f} ms prober per instance, times the interval; silence: the "
        "longest time between two of its answers (median/p99/max). Throughput: each "
        "migration's bytes over its own time (median), over the link's.",
        DRAIN_HEADERS,
        [_drain_row(r) for r in runs],
        [times, blackouts],
    )


# -- plots --------------------------------------------------------------------------------------


def _bars(path: Path, labels: list[str], series: dict[str, list[float]], ylabel: str,
          title: str) -> str:  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels)), 4.0))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return _saved(fig, path)


def _spread(path: Path, labels: list[str], values: list[list[float]], ylabel: str,
            title: str) -> str:  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels)), 4.0))
    for x, points in enumerate(values):
        ax.scatter([x] * len(points), points, alpha=0.7)
        if points:
            ax.hlines(statistics.median(points), x - 0.3, x + 0.3, colors="black")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (bar: median)")
    return _saved(fig, path)


def _saved(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


# -- control plane at scale -----------------------------------------------------------------------


def scale_section(report: dict[str, Any], out: Path) -> Section:
    from ferry.bench.scale import MANY_DRAINS, NO_DRAIN  # noqa: PLC0415
    from ferry.bench.scale_report import NOTES, summary_lines, table_rows  # noqa: PLC0415

    rows: list[list[Cell]] = [
        [r["figure"], r["unit"], r["baseline"], r["value"], r["ratio"]] for r in table_rows(report)
    ]
    latency = report["latency"]
    kinds = sorted(report["latency_ratios"])
    phases = [p for p in (NO_DRAIN, MANY_DRAINS) if p in latency]
    series = {
        f"{quantile} {phase}": [latency[phase][k][quantile] for k in kinds]
        for quantile in ("p50", "p99")
        for phase in phases
    }
    plot = _bars(out / "scale-latency.png", kinds, series, "ms",
                 "API read latency without a drain and during the drains")  # fmt: skip
    return Section(
        "Control plane at scale (fake driver)",
        _scale_command(report["options"]),
        "A real controller (SQLite) with simulated hosts, each a fake-driver agent behind its own "
        "mutual TLS listener, drained under a steady open-loop read load.",
        ["figure", "unit", "baseline", "measured", "ratio"],
        rows,
        [plot],
        [*summary_lines(report), *NOTES],
    )


def _scale_command(options: dict[str, Any]) -> str:
    return (
        f"ferry bench scale --hosts {options['hosts']} --instances {options['instances']} "
        f"--drains {options['drains']} --read-rate {options['read_rate']:g} --out DIR"
    )


# -- fault injection ----------------------------------------------------------------------------


def faults_section(runs: list[dict[str, Any]], out: Path, lab: bool = False) -> Section:
    """Runs per fault kind and phase, by outcome."""
    tally: dict[tuple[str, str], Counter[str]] = {}
    for run in runs:
        tally.setdefault((run["kind"], run["phase"]), Counter())[run["outcome"]] += 1
    rows: list[list[Cell]] = [
        [kind, phase, sum(c.values()), c["clean"], c["missed"], c["violated"] + c["error"]]
        for (kind, phase), c in sorted(tally.items())
    ]
    failed = [f"seed {r['seed']}: {'; '.join(r['violations'])}" for r in runs
              if r["outcome"] in ("violated", "error")]  # fmt: skip
    seeds = sorted(r["seed"] for r in runs)
    where = "--lab LAB " if lab else ""
    hosts = (
        "a fresh lab of real QEMU hosts (also checked: each running instance answers ping on "
        "its IP, no QEMU process or tap leaked)"
        if lab
        else "a fresh cluster of fake-driver hosts (real controller and agent processes)"
    )
    return Section(
        "Fault injection on real hosts" if lab else "Fault injection on simulated hosts",
        f"ferry faults run {where}--runs {len(runs)} --seed {seeds[0] if seeds else 0} --out DIR",
        f"Seeded faults at a phase of a drain, each run on {hosts}, then the invariants "
        "(every instance on exactly one host, claims match, every drain ended, no leftover). "
        "Missed: the drain ended before the phase came (no fault injected).",
        ["fault", "phase", "runs", "clean", "missed", "violated or error"],
        rows,
        notes=failed,
    )


SECTIONS: dict[str, Callable[[Any, Path], Section]] = {
    "planner": planner_section,
    "migration": migration_section,
    "drain": drain_section,
    "drain-disks": lambda report, out: drain_section(report, out, disks=True),
    "scale": scale_section,
    "faults": faults_section,
    "faults-lab": lambda runs, out: faults_section(runs, out, lab=True),
}
