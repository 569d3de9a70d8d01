"""ferry faults run: seeded fault injection into drains on a fake cluster, with invariant checks."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ferry.cli.client import CliError
from ferry.cli.output import Format, FormatOpt, console, emit_json, styled, table

if TYPE_CHECKING:
    from ferry.faults.runner import Backend

app = typer.Typer(help="Fault injection: drains under crashes, with invariant checks.")


@app.callback()
def _group() -> None:
    """Fault injection: drains under crashes, with invariant checks."""


COLUMNS = [
    ("SEED", lambda r: r["seed"]),
    ("FAULT", lambda r: r["kind"]),
    ("PHASE", lambda r: r["phase"]),
    ("DISKS", lambda r: r.get("storage", "shared")),
    ("OUTCOME", lambda r: _outcome(r["outcome"])),
    ("DRAINS", lambda r: ", ".join(f"{h}: {s}" for h, s in sorted(r["drains"].items())) or "-"),
    ("INSTANCES", lambda r: ", ".join(f"{n} {s}" for s, n in sorted(r["instances"].items()))),
    ("VIOLATIONS", lambda r: len(r["violations"])),
    ("s", lambda r: f"{r['seconds']:.0f}"),
]


def _outcome(outcome: str) -> str:
    style = {"clean": "green", "missed": "yellow"}.get(outcome, "red")
    return f"[{style}]{outcome}[/{style}]"


def _kinds(values: list[str] | None) -> tuple[Any, ...]:
    from ferry.faults.scenarios import ALL_KINDS, FaultKind  # noqa: PLC0415

    if not values:
        return ALL_KINDS
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    known = {k.value: k for k in FaultKind}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise CliError(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(known[n] for n in names))


def _phases(values: list[str] | None) -> tuple[Any, ...] | None:
    from ferry.faults.scenarios import Phase  # noqa: PLC0415

    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    known = {p.value: p for p in Phase}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise CliError(f"unknown phase(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(known[n] for n in names))


def _cancel_on_sigterm(task: asyncio.Task[Any]) -> None:
    """Cancel `task` on SIGTERM to this process. Not through the event loop's signal handling:
    that routes signals through a socket that forked children share (the lab's network set-up
    forks helpers), so a helper's own SIGTERM would cancel the runs."""
    loop, pid = asyncio.get_running_loop(), os.getpid()

    def on_term(_signum: int, _frame: object) -> None:
        if os.getpid() == pid:
            loop.call_soon_threadsafe(task.cancel)

    signal.signal(signal.SIGTERM, on_term)


@app.command("run")
def run(
    runs: Annotated[int, typer.Option(min=1, max=10_000, help="how many runs")] = 10,
    seed: Annotated[int, typer.Option(min=0, help="the first run's seed; run n uses seed+n")] = 1,
    kinds: Annotated[
        list[str] | None,
        typer.Option(help="fault kinds, comma-separated or repeated (default: all)"),
    ] = None,
    phases: Annotated[
        list[str] | None,
        typer.Option(
            help="phases to inject at, comma-separated or repeated (default: all): fan-out, "
            "prepare, mirror (a local disk being copied), transfer, switchover"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="write faults.json (--lab: faults-lab.json) here, and the directories (logs, "
            "state) of failed runs; `ferry bench report DIR` makes a report section of it"
        ),
    ] = None,
    keep_all: Annotated[
        bool, typer.Option(help="keep every run's directory, not only those of failed runs")
    ] = False,
    settle: Annotated[
        float | None,
        typer.Option(
            min=5, max=3600, help="seconds a run waits for the cluster to settle [90; lab: 240]"
        ),
    ] = None,
    lab: Annotated[
        Path | None,
        typer.Option(
            help="run on real hosts: a lab (QEMU guests in network namespaces, root) in this "
            "directory, brought up for each run and down after it; prefix flf"
        ),
    ] = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Run seeded fault scenarios against drains on a fresh fake cluster each (a controller and
    fake-driver agents on 127.0.0.1, no root; or a lab of real QEMU hosts with --lab, where
    each instance's IP must also answer and no QEMU process or tap may leak), then check the
    invariants: every instance runs
    on exactly one host and that host is its record, claims match, no stale copy, every drain
    ended with its host's state agreeing, no migration left in flight, every disk intact and
    in exactly one place. Each scenario keeps disks on shared or local storage (the mirror
    phase: always local). Exits 1 when any run violated an invariant or could not run. Replay
    one run with --runs 1 --seed SEED (and the same --kinds and --phases)."""
    from ferry.faults.runner import SETTLE_S, run_all  # noqa: PLC0415
    from ferry.faults.scenarios import scenarios  # noqa: PLC0415

    try:
        chosen = scenarios(seed, runs, _kinds(kinds), _phases(phases))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    backend, settle = _backend(lab, settle)

    def say(text: str) -> None:
        if fmt is Format.TABLE:
            console.print(text, highlight=False, markup=False)

    async def run_them() -> list[Any]:
        # SIGTERM ends the runs like Ctrl-C does: every process they started is stopped first
        task = asyncio.current_task()
        assert task is not None
        _cancel_on_sigterm(task)
        return await run_all(chosen, out, say, settle or SETTLE_S, backend, keep_all)

    try:
        reports = asyncio.run(run_them())
    except asyncio.CancelledError:
        raise typer.Exit(128 + signal.SIGTERM) from None
    _show(reports, fmt, out / backend.results if out is not None else None)
    if any(r.failed for r in reports):
        raise typer.Exit(1)


def _backend(lab: Path | None, settle: float | None) -> tuple[Backend, float | None]:
    """Fake hosts, or with --lab the lab's real ones (root only) and their longer settle."""
    from ferry.faults.runner import FAKE  # noqa: PLC0415

    if lab is None:
        return FAKE, settle
    from ferry.faults import lab as real  # noqa: PLC0415

    if os.geteuid() != 0:
        raise CliError("--lab needs root: the lab runs QEMU guests in network namespaces")
    return real.backend(lab), settle or real.LAB_SETTLE_S


def _show(reports: list[Any], fmt: Format, results: Path | None) -> None:
    rows = [r.to_json() for r in reports]
    if fmt is Format.JSON:
        emit_json(rows)
        return
    console.print()
    table(rows, COLUMNS)
    failed = sum(r.failed for r in reports)
    missed = sum(r.outcome == "missed" for r in reports)
    verdict = styled("failed") if failed else styled("completed")
    console.print(
        f"{len(reports)} run(s): {failed} with violations or errors, {missed} missed "
        f"the phase; {verdict}"
    )
    if results is not None:
        console.print(f"report: {results}")
