"""ferry bench migration, ferry bench drain, ferry bench planner, ferry bench scale."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from ferry.cli.client import CliError
from ferry.cli.lab_cmd import DEFAULT_DIR, LabDir
from ferry.cli.output import Format, FormatOpt, console, emit_json, table

app = typer.Typer(help="Benchmarks, each against a baseline measured in the same run.")


@app.callback()
def _group() -> None:
    """Benchmarks, each against a baseline measured in the same run."""


OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="also write the results as JSON into this directory, for `ferry bench report DIR`",
    ),
]


def _save(out: Path | None, name: str, data: Any) -> None:
    if out is None:
        return
    from ferry.bench.report import save  # noqa: PLC0415

    try:
        path = save(out, name, data)
    except OSError as exc:
        raise CliError(f"cannot write the results into {out}: {exc.strerror or exc}") from exc
    # on stderr: with --format json, stdout carries the results alone
    typer.echo(f"results: {path}", err=True)


COLUMNS = [
    ("SCENARIO", lambda r: r["scenario"]["name"]),
    ("RAM MiB", lambda r: r["scenario"]["ram_mb"]),
    ("DIRTY MiB/s", lambda r: r["scenario"]["dirty_mibps"]),
    ("MINIMUM s", lambda r: f"{r['minimum_s']:.2f}"),
    ("STREAM s", lambda r: f"{_median(r, 'stream_s'):.2f}"),
    ("x MINIMUM", lambda r: f"{r['ratio_to_minimum']:.2f}"),
    ("WALL s", lambda r: f"{_median(r, 'wall_s'):.2f}"),
    ("RUNS", lambda r: len(r["samples"])),
    ("DOWNTIME ms median/p99/max", lambda r: _spread(r, "downtime_ms")),
    ("BLACKOUT ms median/p99/max", lambda r: _spread(r, "blackout_ms")),
    ("SILENCE ms median/p99/max", lambda r: _spread(r, "silence_ms")),
    ("SENT MiB", lambda r: f"{_median(r, 'sent_mib'):.0f}"),
    ("PASSES", lambda r: f"{_median(r, 'passes'):.0f}"),
]


def _median(result: dict[str, Any], field: str) -> float:
    import statistics  # noqa: PLC0415

    return float(statistics.median(s[field] for s in result["samples"]))


def _spread(result: dict[str, Any], field: str) -> str:
    return "/".join(f"{result[field][k]:.0f}" for k in ("median", "p99", "max"))


DRAIN_COLUMNS = [
    ("WORKLOAD", lambda r: r["workload"]),
    ("MODE", lambda r: r["mode"]),
    ("DRAIN s", lambda r: f"{r['wall_s']:.1f}"),
    ("MOVED MiB", lambda r: f"{r['moved_mib']:.0f}"),
    ("OF WHICH DISK", lambda r: f"{r.get('disk_mib', 0):.0f}"),
    ("BOUND s", lambda r: f"{r['bound_s']:.1f}"),
    ("x BOUND", lambda r: f"{r['ratio_to_bound']:.2f}"),
    ("x ONE-AT-A-TIME", lambda r: f"{r['ratio_to_one_at_a_time']:.2f}"),
    ("BLACKOUT ms median/p99/max", lambda r: _spread(r, "blackout_ms")),
    ("SILENCE ms median/p99/max", lambda r: _spread(r, "silence_ms") if "silence_ms" in r else "-"),
    ("DOWNTIME ms max", lambda r: max(r["downtimes_ms"], default=0)),
]


DirtyOpt = Annotated[
    int, typer.Option(min=1, max=1000, help="what each dirtying guest writes per second, MiB")
]
DiskMibOpt = Annotated[
    int,
    typer.Option(min=1, max=65536, help="data on each guest's disk (disk workloads), MiB"),
]
DiskWriteOpt = Annotated[
    int,
    typer.Option(min=1, max=100_000, help="what each disk-writing guest writes per second, KiB"),
]


@app.command("drain")
def drain(
    lab_dir: LabDir = DEFAULT_DIR,
    instances: Annotated[int, typer.Option(min=1, max=50, help="guests on the drained host")] = 6,
    max_bandwidth_mib: Annotated[
        int, typer.Option(min=1, max=100_000, help="the migrations' bandwidth cap")
    ] = 1000,
    workloads: Annotated[
        str,
        typer.Option(
            help="comma-separated: idle, dirtying, and on a lab with local storage disk-idle, "
            "disk-writing (each drained both ways)"
        ),
    ] = "idle,dirtying",
    dirty_mibps: DirtyOpt = 16,
    disk_mib: DiskMibOpt = 1024,
    disk_write_kibps: DiskWriteOpt = 1024,
    out: OutOpt = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Drain time of the lab's first host against the physical bound (bytes moved, RAM and
    disks, / the source link's TCP throughput) and against one migration at a time, on the same
    guests. The results of disk workloads are saved as `drain-disks`, the others as `drain`."""
    from ferry.bench.drain import Rates, workloads_named  # noqa: PLC0415

    try:
        chosen = workloads_named(workloads, Rates(dirty_mibps, disk_mib, disk_write_kibps))
    except ValueError as exc:
        raise CliError(f"--workloads: {exc}") from None
    report = _run_drain(lab_dir, instances, max_bandwidth_mib, chosen, fmt)
    _save(out, "drain-disks" if any(w.local for w in chosen) else "drain", report)
    if fmt is Format.JSON:
        emit_json(report)
        return
    table(report["runs"], DRAIN_COLUMNS)
    console.print(
        "BOUND: bytes the drain moved (RAM and disks) / the source link's TCP throughput "
        "measured in this run; one at a time: max_parallel=1, max_outbound=1, prepare_ahead=0 "
        "on the same guests",
        highlight=False,
    )


def _run_drain(
    lab_dir: Path, instances: int, max_bandwidth_mib: int, chosen: Any, fmt: Format
) -> dict[str, Any]:
    from ferry.bench.drain import DrainBench, to_json  # noqa: PLC0415
    from ferry.lab.cluster import LabRecord  # noqa: PLC0415
    from ferry.lab.lifecycle import LabError  # noqa: PLC0415

    record = LabRecord.load(lab_dir.resolve())
    if record is None:
        raise CliError(f"no lab in {lab_dir}: start one with `ferry lab up`")

    def say(line: str) -> None:
        if fmt is Format.TABLE:
            console.print(f"[bold]bench[/bold] {line}", highlight=False)

    try:
        bench = DrainBench(record, say, instances, max_bandwidth_mib, chosen)
        return to_json(asyncio.run(bench.run()))
    except LabError as exc:
        raise CliError(str(exc)) from exc


@app.command("migration")
def migration(
    lab_dir: LabDir = DEFAULT_DIR,
    runs: Annotated[int, typer.Option(min=1, max=50, help="migrations of the dirtying guest")] = 3,
    idle_runs: Annotated[
        int, typer.Option(min=1, max=200, help="migrations of the idle guest (for its p99)")
    ] = 24,
    max_bandwidth_mib: Annotated[
        int, typer.Option(min=1, max=100_000, help="the migrations' bandwidth cap")
    ] = 1000,
    out: OutOpt = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Migration time of an idle and a dirtying instance of the lab image (medians of
    --idle-runs and --runs migrations back and forth) against the minimum: guest memory /
    min(TCP throughput between the hosts, the cap); blackout at 10 ms probes and QEMU's downtime
    (median, p99, max)."""
    from ferry.bench.migration import MigrationBench, to_json  # noqa: PLC0415
    from ferry.lab.cluster import LabRecord  # noqa: PLC0415
    from ferry.lab.lifecycle import LabError  # noqa: PLC0415

    record = LabRecord.load(lab_dir.resolve())
    if record is None:
        raise CliError(f"no lab in {lab_dir}: start one with `ferry lab up`")

    def say(line: str) -> None:
        if fmt is Format.TABLE:
            console.print(f"[bold]bench[/bold] {line}")

    try:
        bench = MigrationBench(record, say, runs, max_bandwidth_mib, idle_runs)
        results = to_json(asyncio.run(bench.run()))
    except LabError as exc:
        raise CliError(str(exc)) from exc
    _save(out, "migration", results)
    if fmt is Format.JSON:
        emit_json(results)
    else:
        table(results, COLUMNS)
        console.print(
            "MINIMUM: guest memory / link throughput; x MINIMUM: median streaming time over it "
            "(below 1: QEMU skipped zero pages); BLACKOUT: longest run of lost 10 ms pings; "
            "SILENCE: longest time between two answers"
        )


PLANNER_COLUMNS = [
    ("SCENARIO", lambda r: r["scenario"]["name"]),
    ("HOSTS", lambda r: r["scenario"]["hosts"]),
    ("ELIGIBLE", lambda r: r["eligible_hosts"]),
    ("INSTANCES", lambda r: r["scenario"]["instances"]),
    ("PLANNER ms", lambda r: f"{r['planner']['seconds'] * 1000:.1f}"),
    ("GREEDY ms", lambda r: f"{r['greedy']['seconds'] * 1000:.1f}"),
    ("TIME RATIO", lambda r: f"{r['time_ratio']:.3f}"),
    ("BOUND", lambda r: f"{r['lower_bound']:.3f}"),
    ("PLANNER MAX", lambda r: f"{r['planner']['max_utilization']:.3f}"),
    ("PLANNER/BOUND", lambda r: f"{r['planner']['balance']:.2f}"),
    ("GREEDY MAX", lambda r: f"{r['greedy']['max_utilization']:.3f}"),
    ("GREEDY/BOUND", lambda r: f"{r['greedy']['balance']:.2f}"),
    ("PLACED", lambda r: f"{r['planner']['placed']} / {r['greedy']['placed']}"),
]


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of host counts, e.g. 1000,10000") from None
    if not sizes or any(n < 1 or n > 1_000_000 for n in sizes):
        raise typer.BadParameter("host counts between 1 and 1000000, e.g. 1000,10000")
    return sizes


@app.command("planner")
def planner(
    instances: Annotated[
        int, typer.Option(min=1, max=100_000, help="instances drained in the large clusters")
    ] = 200,
    hosts: Annotated[
        str, typer.Option(help="cluster sizes to drain over, comma-separated")
    ] = "1000,10000",
    seed: Annotated[int, typer.Option(help="seed of the synthetic clusters")] = 1,
    runs: Annotated[int, typer.Option(min=1, max=50, help="timed runs; the fastest counts")] = 3,
    out: OutOpt = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """The evacuation planner on synthetic clusters of each --hosts size (and a small one near
    60 % load) against a one-at-a-time greedy loop on the same cluster: time, and the largest
    destination utilization over a lower bound (perfectly spread divisible load). Needs no lab."""
    from ferry.bench.planner import run, specs, to_json  # noqa: PLC0415
    from ferry.scheduler.setup import build  # noqa: PLC0415

    scenarios = specs(_sizes(hosts), instances, seed)

    def say(line: str) -> None:
        if fmt is Format.TABLE:
            console.print(f"[bold]bench[/bold] {line}")

    results = to_json(run(build(), scenarios, say, runs))
    _save(out, "planner", results)
    if fmt is Format.JSON:
        emit_json(results)
    else:
        table(results, PLANNER_COLUMNS)
        console.print(
            "GREEDY: one instance at a time in name order, to the scheduler's pick among the "
            "hosts as the earlier ones left them; TIME RATIO: planner / greedy (fastest of "
            "--runs each); MAX: largest dominant share among hosts that received an instance; "
            "BOUND: the level perfectly spread divisible load would reach, so MAX/BOUND >= 1 "
            "once every instance is placed; PLACED: planner / greedy"
        )


SCALE_COLUMNS = [
    ("FIGURE", lambda r: r["figure"]),
    ("UNIT", lambda r: r["unit"]),
    ("BASELINE", lambda r: r["baseline"]),
    ("MEASURED", lambda r: r["value"]),
    ("RATIO", lambda r: r["ratio"]),
]
SCALE_READ_COLUMNS = [
    ("READ", lambda r: r["read"]),
    ("p50 ms", lambda r: r["p50"]),
    ("p99 ms", lambda r: r["p99"]),
    ("RATIO p50/p99", lambda r: r["ratio"]),
    ("COUNT", lambda r: r["count"]),
]


@app.command("scale")
def scale(
    hosts: Annotated[int, typer.Option(min=4, max=10_000, help="simulated hosts")] = 1000,
    instances: Annotated[int, typer.Option(min=4, max=200_000, help="instances")] = 20_000,
    drains: Annotated[int, typer.Option(min=1, max=500, help="hosts drained at once")] = 20,
    read_rate: Annotated[
        float, typer.Option(min=0.5, max=1000, help="API reads per second during measurements")
    ] = 10.0,
    reads_s: Annotated[
        float, typer.Option(min=1, help="seconds of reads without a drain (the baseline)")
    ] = 20.0,
    idle_s: Annotated[
        float, typer.Option(min=1, help="seconds without reads first (heartbeats only)")
    ] = 10.0,
    seed_concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="instance creations in flight while seeding")
    ] = 8,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="where the controller, fleet and PKI keep their files (kept); "
            "default: a temporary directory, removed after the run"
        ),
    ] = None,
    out: OutOpt = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """The control plane at scale: a real controller with simulated hosts (one fleet process
    serving every host's fake-driver agent over mutual TLS), DRAINS hosts entering maintenance
    at once under a steady read load; read latency against no drain, controller CPU and SQL
    statements per migration against one host's drain, all in the same run. Needs no root."""
    import shutil  # noqa: PLC0415

    from ferry.bench.scale import ScaleBench, ScaleOptions  # noqa: PLC0415
    from ferry.bench.scale_cluster import ScaleError  # noqa: PLC0415
    from ferry.bench.scale_report import (  # noqa: PLC0415
        latency_rows,
        summary_lines,
        table_rows,
        to_json,
    )

    def say(line: str) -> None:
        if fmt is Format.TABLE:
            console.print(f"[bold]bench[/bold] {line}", highlight=False)

    options = ScaleOptions(hosts=hosts, instances=instances, drains=drains, read_rate=read_rate,
                           idle_s=idle_s, reads_s=reads_s,
                           seed_concurrency=seed_concurrency)  # fmt: skip
    try:
        bench = ScaleBench(options, say, state_dir)
        report = to_json(asyncio.run(bench.run()))
    except ScaleError as exc:
        raise CliError(str(exc)) from exc
    if state_dir is None:
        shutil.rmtree(bench.root, ignore_errors=True)
    _save(out, "scale", report)
    if fmt is Format.JSON:
        emit_json(report)
    else:
        for line in summary_lines(report):
            console.print(line, highlight=False)
        table(table_rows(report), SCALE_COLUMNS)
        table(latency_rows(report), SCALE_READ_COLUMNS)
    if report["problems"]:
        raise CliError("the outcome is wrong: " + "; ".join(report["problems"]))


@app.command("report")
def report(
    out: Annotated[Path, typer.Argument(help="the directory the benches wrote with --out")],
) -> None:
    """Write DIR/report.md, with PNG plots next to it, from the results the bench commands (and
    `ferry faults run --out DIR`) left in DIR: a section per result, each figure a ratio against
    its baseline from the same run, and the command that produced it."""
    from ferry.bench.report import build  # noqa: PLC0415

    if not out.is_dir():
        raise CliError(f"no directory {out}: run the benches with --out {out} first")
    try:
        path = build(out)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"a result file in {out} is not one the benches wrote: {exc!r}") from exc
    console.print(f"report: {path}", highlight=False)
