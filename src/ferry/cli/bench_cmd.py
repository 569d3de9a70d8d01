"""ferry bench migration."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from ferry.cli.client import CliError
from ferry.cli.lab_cmd import DEFAULT_DIR, LabDir
from ferry.cli.output import Format, FormatOpt, console, emit_json, table

app = typer.Typer(help="Benchmarks of a running lab, against baselines of the same run.")


@app.callback()
def _group() -> None:
    """Benchmarks of a running lab, against baselines of the same run."""


COLUMNS = [
    ("SCENARIO", lambda r: r["scenario"]["name"]),
    ("RAM MiB", lambda r: r["scenario"]["ram_mb"]),
    ("DIRTY MiB/s", lambda r: r["scenario"]["dirty_mibps"]),
    ("MINIMUM s", lambda r: f"{r['minimum_s']:.2f}"),
    ("STREAM s", lambda r: f"{_median(r, 'stream_s'):.2f}"),
    ("x MINIMUM", lambda r: f"{r['ratio_to_minimum']:.2f}"),
    ("WALL s", lambda r: f"{_median(r, 'wall_s'):.2f}"),
    ("DOWNTIME ms", lambda r: f"{_median(r, 'downtime_ms'):.0f}"),
    ("BLACKOUT ms", lambda r: f"{_median(r, 'blackout_ms'):.0f}"),
    ("SENT MiB", lambda r: f"{_median(r, 'sent_mib'):.0f}"),
    ("PASSES", lambda r: f"{_median(r, 'passes'):.0f}"),
]


def _median(result: dict[str, Any], field: str) -> float:
    import statistics  # noqa: PLC0415

    return float(statistics.median(s[field] for s in result["samples"]))


@app.command("migration")
def migration(
    lab_dir: LabDir = DEFAULT_DIR,
    runs: Annotated[int, typer.Option(min=1, max=50, help="migrations per scenario")] = 3,
    max_bandwidth_mib: Annotated[
        int, typer.Option(min=1, max=100_000, help="the migrations' bandwidth cap")
    ] = 1000,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Migration time and blackout of an idle and a dirtying guest (medians of --runs) against
    the minimum: guest memory / min(TCP throughput between the hosts, the cap)."""
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
        bench = MigrationBench(record, say, runs, max_bandwidth_mib)
        results = to_json(asyncio.run(bench.run()))
    except LabError as exc:
        raise CliError(str(exc)) from exc
    if fmt is Format.JSON:
        emit_json(results)
    else:
        table(results, COLUMNS)
        console.print(
            "MINIMUM: guest memory / link throughput; x MINIMUM: median streaming time over it "
            "(below 1: QEMU skipped zero pages); BLACKOUT: longest gap of 20 ms pings"
        )
