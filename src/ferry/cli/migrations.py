"""ferry instance migrate, ferry migration list|show|abort."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID

from ferry.cli.client import Api, CliError
from ferry.cli.context import api
from ferry.cli.output import Format, FormatOpt, console, emit_json, fields, styled, table, when
from ferry.cli.progress_view import (
    bar_columns,
    copying,
    disk_bar,
    disk_cell,
    disk_line,
    disk_summary,
)

app = typer.Typer(help="Live migrations: list, show, abort.", no_args_is_help=True)
ACTIVE = {"queued", "scheduled", "preparing", "running", "postcopy", "switching"}
MIB = 2**20


def parse_policy(pairs: list[str] | None) -> dict[str, Any]:
    """`--policy key=value` pairs; values are JSON when they parse (numbers, true, lists)."""
    policy: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise CliError(f"--policy takes key=value, not {pair!r}")
        try:
            policy[key] = json.loads(raw)
        except json.JSONDecodeError:
            policy[key] = raw
    return policy


def migrate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    host: Annotated[str | None, typer.Option(help="destination; default: the scheduler")] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(help="convergence override, e.g. max_bandwidth_mib=200, postcopy=true"),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow it with a progress bar")] = False,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Live-migrate a running instance over TLS; its IP and MAC stay."""
    client = api(ctx)
    m = client.post(f"/v1/instances/{name}/migrate", {"host": host, "policy": parse_policy(policy)})
    if wait:
        m = _follow(client, m, quiet=fmt is Format.JSON)
    if fmt is Format.JSON:
        emit_json(m)
    else:
        _summary(m)
    if m["state"] in ("failed", "cancelled"):
        raise CliError(f"migration of {name} {m['state']}: {m['error']}")


def _detail(m: dict[str, Any]) -> str:
    if copying(m):
        return f"{m['state']}: copying the disk first"
    detail = f"{m['state']} pass {m['passes'] or 0}"
    if m["throughput_mbps"]:
        detail += f" {m['throughput_mbps']:.0f} Mbit/s"
    if m["dirty_rate"]:
        detail += f" dirtying {m['dirty_rate'] / MIB:.0f} MiB/s"
    return detail


def _follow(client: Api, m: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Poll until the migration ends: a live bar on a terminal (the RAM's, and the disk's beside
    it when a local disk is copied), a line per second otherwise (none when `quiet`: JSON
    follows on stdout)."""
    if quiet or not console.is_terminal:
        return _follow_lines(client, m, quiet=quiet)
    with Progress(*bar_columns(), console=console, transient=True) as bar:
        task = bar.add_task(
            f"{m['instance']} {m['source']} -> {m['destination']}", total=None, detail=m["state"]
        )
        disk: TaskID | None = None
        while m["state"] in ACTIVE:
            time.sleep(0.5)
            m = client.get(f"/v1/migrations/{m['id']}")
            if (copy := disk_bar(m)) is not None:
                if disk is None:
                    disk = bar.add_task("  disk", total=None, detail="")
                bar.update(disk, **copy)
            bar.update(
                task,
                total=m["bytes_total"] or None,
                completed=m["bytes_sent"] or 0,
                detail=_detail(m),
            )
    return m


def _follow_lines(client: Api, m: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    shown = ""
    while m["state"] in ACTIVE:
        line = (
            f"{m['instance']} {m['source']} -> {m['destination']}: "
            f"{(m['bytes_sent'] or 0) / MIB:.0f}/{(m['bytes_total'] or 0) / MIB:.0f} MiB "
            f"{_detail(m)}{disk_line(m)}"
        )
        if line != shown and not quiet:
            console.print(line)
            shown = line
        time.sleep(1.0)
        m = client.get(f"/v1/migrations/{m['id']}")
    return m


def _seconds(m: dict[str, Any]) -> str:
    if not (m["finished_at"] and m["started_at"]):
        return "-"
    from datetime import datetime  # noqa: PLC0415

    span = datetime.fromisoformat(m["finished_at"]) - datetime.fromisoformat(m["started_at"])
    return f"{span.total_seconds():.1f}s"


def _state(m: dict[str, Any]) -> str:
    """The state, "abort requested" while an abort is pending, and the error if any."""
    pending = m.get("cancel_requested") and m["state"] not in ("completed", "failed", "cancelled")
    return (
        styled(m["state"])
        + (" (abort requested)" if pending else "")
        + (f": {m['error']}" if m["error"] else "")
    )


def _summary(m: dict[str, Any]) -> None:
    fields(
        [
            ("migration", m["id"]),
            ("instance", f"{m['instance']}: {m['source']} -> {m['destination'] or '-'}"),
            ("state", _state(m)),
            (
                "memory",
                f"{(m['bytes_sent'] or 0) / MIB:.0f} of {(m['bytes_total'] or 0) / MIB:.0f}"
                f" MiB sent, {(m['bytes_remaining'] or 0) / MIB:.0f} MiB remaining",
            ),
            *([("disk", disk_summary(m["disk"]))] if m.get("disk") else []),
            ("passes", m["passes"]),
            ("dirty rate", f"{(m['dirty_rate'] or 0) / MIB:.0f} MiB/s"),
            ("throughput", f"{m['throughput_mbps'] or 0:.0f} Mbit/s"),
            (
                "downtime",
                f"{m['downtime_ms']} ms (limit {m['downtime_limit_ms']} ms)"
                if m["downtime_ms"] is not None
                else f"limit {m['downtime_limit_ms']} ms, expected "
                f"{m['expected_downtime_ms'] or 0} ms",
            ),
            ("time", f"{when(m['started_at'])} .. {when(m['finished_at'])} ({_seconds(m)})"),
            ("stream", f"{m['total_time_ms'] / 1000:.1f}s to switchover (QEMU)")
            if m.get("total_time_ms") is not None
            else ("stream", "-"),
            ("by", m["actor"]),
            ("leftover", f"a copy remains on the {m['leftover']} (removal retried)")
            if m.get("leftover")
            else ("leftover", "none"),
        ]
    )


COLUMNS = [
    ("ID", lambda m: m["id"][:8]),
    ("INSTANCE", lambda m: m["instance"]),
    ("FROM", lambda m: m["source"]),
    ("TO", lambda m: m["destination"] or "-"),
    ("STATE", lambda m: styled(m["state"])),
    (
        "SENT MiB",
        lambda m: f"{(m['bytes_sent'] or 0) / MIB:.0f}/{(m['bytes_total'] or 0) / MIB:.0f}",
    ),
    ("DISK MiB", disk_cell),
    ("DOWNTIME", lambda m: f"{m['downtime_ms']} ms" if m["downtime_ms"] is not None else "-"),
    ("ERROR", lambda m: m["error"] or ""),
]


def _resolve(client: Api, prefix: str) -> dict[str, Any]:
    """A migration by id or unique id prefix (as `list` shows them)."""
    matches = [m for m in client.get("/v1/migrations", limit=1000) if m["id"].startswith(prefix)]
    if len(matches) != 1:
        raise CliError(f"{'no' if not matches else 'more than one'} migration matches {prefix!r}")
    return dict(matches[0])


@app.command("list")
def list_migrations(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="only this state")] = None,
    host: Annotated[str | None, typer.Option(help="from or to this host")] = None,
    instance: Annotated[str | None, typer.Option(help="only this instance")] = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """List migrations, newest first."""
    rows = api(ctx).get("/v1/migrations", state=state, host=host, instance=instance)
    emit_json(rows) if fmt is Format.JSON else table(rows, COLUMNS, empty="no migrations")


@app.command("show")
def show(
    ctx: typer.Context,
    migration: Annotated[str, typer.Argument(help="id or prefix")],
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Show one migration with its progress."""
    m = _resolve(api(ctx), migration)
    emit_json(m) if fmt is Format.JSON else _summary(m)


@app.command("abort")
def abort(
    ctx: typer.Context,
    migration: Annotated[str, typer.Argument(help="id or prefix")],
    wait: Annotated[bool, typer.Option("--wait", help="until it has ended")] = False,
) -> None:
    """Abort a migration: the instance keeps running where it was."""
    client = api(ctx)
    m = client.post(f"/v1/migrations/{_resolve(client, migration)['id']}/abort")
    if wait:
        while m["state"] in ACTIVE:
            time.sleep(0.5)
            m = client.get(f"/v1/migrations/{m['id']}")
    console.print(f"migration {m['id'][:8]} of {m['instance']}: {_state(m)}")
