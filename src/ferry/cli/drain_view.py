"""A drain as an operator follows it: overall progress and one bar per instance while it runs
(and a disk bar beside it for an instance whose local disk is copied), then a summary (where
each instance went, its downtime and time, the RAM and disk bytes moved)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.progress import Progress, TaskID

from ferry.cli.client import CliError
from ferry.cli.output import console, styled, table
from ferry.cli.progress_view import (
    bar_columns,
    copying,
    disk_bar,
    disk_cell,
    disk_line,
    totals,
    totals_text,
)

MIB = 2**20
ACTIVE = {"queued", "scheduled", "preparing", "running", "postcopy", "switching"}
Fetch = Callable[[], dict[str, Any]]


def latest(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each instance's latest attempt (the API lists attempts in order)."""
    return {m["instance"]: m for m in status.get("migrations", [])}


def _draining(status: dict[str, Any]) -> bool:
    return bool(status["maintenance"]["state"] == "draining")


def _overall(status: dict[str, Any]) -> str:
    drain = status["drain"] or {}
    return (
        f"drain of {status['host']}: {drain.get('instances_moved', 0)}/"
        f"{drain.get('instances_total', 0)} moved, {status['instances_remaining']} left"
    )


def _line(m: dict[str, Any]) -> str:
    sent, total = (m["bytes_sent"] or 0) / MIB, (m["bytes_total"] or 0) / MIB
    text = f"{m['instance']} -> {m['destination'] or '?'}: {m['state']}"
    if m["attempt"] > 1:
        text += f" (attempt {m['attempt']})"
    if total:
        text += f" {sent:.0f}/{total:.0f} MiB"
    if m["throughput_mbps"]:
        text += f" {m['throughput_mbps']:.0f} Mbit/s"
    text += disk_line(m)
    if m["error"] and m["state"] not in ACTIVE:
        text += f": {m['error']}"
    return text


def follow(fetch: Fetch, timeout: float, *, quiet: bool) -> dict[str, Any]:
    """Poll until the drain ends: live bars on a terminal, a line per change otherwise (none
    when `quiet`: JSON follows on stdout)."""
    deadline = time.monotonic() + timeout
    status = fetch()
    if quiet or not console.is_terminal:
        return _follow_lines(fetch, status, deadline, quiet=quiet)
    with Progress(*bar_columns(), console=console) as bars:
        overall = bars.add_task(_overall(status), total=None, detail="")
        tasks: dict[str, TaskID] = {}
        while _draining(status):
            _expire(deadline)
            drain = status["drain"] or {}
            bars.update(
                overall,
                description=_overall(status),
                total=drain.get("instances_total") or None,
                completed=drain.get("instances_moved", 0),
                detail=totals_text(totals(latest(status).values())),
            )
            _update_bars(bars, tasks, status)
            time.sleep(0.5)
            status = fetch()
    return status


def _update_bars(bars: Progress, tasks: dict[str, TaskID], status: dict[str, Any]) -> None:
    """One bar per instance (its RAM), and one for its disk below it once a disk is copied."""
    for name, m in latest(status).items():
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=None, detail="")
        bars.update(
            tasks[name],
            description=f"  {name} -> {m['destination'] or '?'}",
            total=m["bytes_total"] or None,
            completed=m["bytes_sent"] or 0,
            detail=styled(m["state"]) + (", copying the disk first" if copying(m) else ""),
        )
        copy = disk_bar(m)
        if copy is None:
            continue
        if f"{name}/disk" not in tasks:
            tasks[f"{name}/disk"] = bars.add_task("    disk", total=None, detail="")
        bars.update(tasks[f"{name}/disk"], **copy)


def _follow_lines(
    fetch: Fetch, status: dict[str, Any], deadline: float, *, quiet: bool
) -> dict[str, Any]:
    shown: dict[str, str] = {}
    while True:
        lines = {"": _overall(status)} | {n: _line(m) for n, m in latest(status).items()}
        for key, text in lines.items():
            if shown.get(key) != text and not quiet:
                console.print(text, highlight=False)
            shown[key] = text
        if not _draining(status):
            return status
        _expire(deadline)
        time.sleep(1.0)
        status = fetch()


def _expire(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise CliError("gave up waiting for the drain (it goes on; see `maintenance status`)")


def _seconds(start: str | None, end: str | None) -> str:
    if not (start and end):
        return "-"
    return f"{(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.1f}s"


def summary(status: dict[str, Any]) -> None:
    """Where each instance went, how long its switchover stopped it, and how long it took."""
    moves = status.get("migrations", [])
    if not moves:
        return
    attempts: dict[str, int] = {}
    for m in moves:
        attempts[m["instance"]] = attempts.get(m["instance"], 0) + 1
    console.print()
    table(
        list(latest(status).values()),
        [
            ("INSTANCE", lambda m: m["instance"]),
            ("TO", lambda m: m["destination"] or "-"),
            ("STATE", lambda m: styled(m["state"])),
            ("TRIES", lambda m: attempts[m["instance"]]),
            (
                "DOWNTIME",
                lambda m: f"{m['downtime_ms']} ms" if m["downtime_ms"] is not None else "-",
            ),
            ("TIME", lambda m: _seconds(m["started_at"], m["finished_at"])),
            ("SENT MiB", lambda m: f"{(m['bytes_sent'] or 0) / MIB:.0f}"),
            ("DISK MiB", disk_cell),
            ("ERROR", lambda m: m["error"] or ""),
        ],
    )
    drain = status["drain"] or {}
    console.print(
        f"\n{drain.get('instances_moved', 0)} of {drain.get('instances_total', 0)} instance(s) "
        f"moved in {_seconds(drain.get('created_at'), drain.get('finished_at'))}; "
        f"{totals_text(totals(latest(status).values()))}",
        highlight=False,
    )
