"""ferry host ...: list, show, disable, enable, maintenance enter|exit|status."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from ferry.cli import drain_view
from ferry.cli.client import CliError
from ferry.cli.context import api
from ferry.cli.migrations import parse_policy
from ferry.cli.output import Format, FormatOpt, console, emit_json, fields, styled, table, when

app = typer.Typer(help="Hosts: state, enable/disable, maintenance.", no_args_is_help=True)
maintenance = typer.Typer(help="Enter, exit or watch a host's maintenance.", no_args_is_help=True)
app.add_typer(maintenance, name="maintenance")

Name = Annotated[str, typer.Argument(help="host name")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="why (1-255 characters)")]
OptReason = Annotated[str | None, typer.Option("--reason", "-r", help="why (1-255 characters)")]


def _path(name: str, *rest: str) -> str:
    return "/".join(["/v1/hosts", quote(name, safe=""), *rest])


def _capacity(host: dict[str, Any]) -> str:
    inv = host["inventory"]
    return f"{inv['vcpus']} vCPU / {inv['ram_mb'] // 1024} GiB"


HOST_COLUMNS = [
    ("NAME", lambda h: h["name"]),
    ("LIVENESS", lambda h: styled(h["liveness"])),
    ("ADMIN", lambda h: styled(h["admin"]["state"])),
    ("MAINTENANCE", lambda h: styled(h["maintenance"]["state"])),
    ("INSTANCES", lambda h: h["instances"]),
    ("CAPACITY", _capacity),
    ("REASON", lambda h: h["maintenance"]["reason"] or h["admin"]["reason"] or ""),
]


@app.command("list")
def list_hosts(
    ctx: typer.Context,
    admin_state: Annotated[str | None, typer.Option(help="enabled or disabled")] = None,
    maintenance_state: Annotated[
        list[str] | None,
        typer.Option("--maintenance", help="in_service, draining, in_maintenance, drain_failed"),
    ] = None,
    liveness: Annotated[str | None, typer.Option(help="up or down")] = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """List hosts with their liveness, admin and maintenance state."""
    hosts = api(ctx).get(
        "/v1/hosts", admin_state=admin_state, maintenance=maintenance_state, liveness=liveness
    )
    if fmt is Format.JSON:
        emit_json(hosts)
    else:
        table(hosts, HOST_COLUMNS, empty="no host matches")


def _storage(storage: dict[str, Any] | None) -> str:
    if not storage:
        return "-"
    where = f"shared pool {storage['pool']}" if storage["kind"] == "shared" else "local"
    return f"{where}, {storage['free_gb']} GiB free"


def _show(host: dict[str, Any]) -> None:
    inv, caps, adm, mnt = (
        host["inventory"],
        host["capabilities"],
        host["admin"],
        host["maintenance"],
    )
    fields(
        [
            ("name", host["name"]),
            (
                "liveness",
                f"{styled(host['liveness'])} (last heartbeat {when(host['last_heartbeat_at'])})",
            ),
            ("admin", f"{styled(adm['state'])}" + (f": {adm['reason']}" if adm["reason"] else "")),
            ("maintenance", styled(mnt["state"]) + (f": {mnt['reason']}" if mnt["reason"] else "")),
            ("  by / since", f"{mnt['actor'] or '-'} / {when(mnt['since'])}"),
            ("schedulable", "yes" if mnt["schedulable"] and adm["state"] == "enabled" else "no"),
            (
                "addresses",
                f"management {host['management_address']}, migration {host['migration_address']}",
            ),
            (
                "capacity",
                f"{inv['vcpus']} vCPU (x{inv['cpu_allocation_ratio']:g}), "
                f"{inv['ram_mb']} MiB RAM (x{inv['ram_allocation_ratio']:g}), "
                f"{inv['disk_gb']} GiB disk",
            ),
            (
                "cpu / machine",
                f"{caps['cpu_model']} / {caps['machine_type']}, QEMU {caps['qemu_version']}, "
                f"{caps.get('accelerator', 'tcg').upper()}",
            ),
            ("networks", ", ".join(caps["networks"]) or "-"),
            ("storage", _storage(host.get("storage"))),
            ("instances", host["instances"]),
        ]
    )


@app.command("show")
def show_host(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Show one host in full."""
    host = api(ctx).get(_path(name))
    emit_json(host) if fmt is Format.JSON else _show(host)


@app.command("disable")
def disable_host(
    ctx: typer.Context, name: Name, reason: Reason, fmt: FormatOpt = Format.TABLE
) -> None:
    """Stop scheduling new instances onto a host (its instances stay)."""
    host = api(ctx).post(_path(name, "disable"), {"reason": reason})
    emit_json(host) if fmt is Format.JSON else console.print(f"host {name} disabled: {reason}")


@app.command("enable")
def enable_host(
    ctx: typer.Context, name: Name, reason: OptReason = None, fmt: FormatOpt = Format.TABLE
) -> None:
    """Allow scheduling onto a host again."""
    host = api(ctx).post(_path(name, "enable"), {"reason": reason})
    emit_json(host) if fmt is Format.JSON else console.print(f"host {name} enabled")


def _show_status(status: dict[str, Any]) -> None:
    mnt, drain = status["maintenance"], status["drain"]
    pairs: list[tuple[str, Any]] = [
        ("host", status["host"]),
        ("state", styled(mnt["state"])),
        ("reason", mnt["reason"]),
        ("by / since", f"{mnt['actor'] or '-'} / {when(mnt['since'])}"),
        ("schedulable", "yes" if mnt["schedulable"] else "no"),
        ("instances left", status["instances_remaining"]),
    ]
    if drain:
        pairs += [
            ("drain", f"{drain['id']} {styled(drain['state'])}"),
            (
                "  moved / failed",
                f"{drain['instances_moved']}/{drain['instances_total']}, "
                f"{drain['instances_failed']} failed",
            ),
            ("  started / ended", f"{when(drain['created_at'])} / {when(drain['finished_at'])}"),
        ]
        if drain["error"]:
            pairs.append(("  error", drain["error"]))
    fields(pairs)
    drain_view.summary(status)


def _percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def _load(side: str) -> Any:
    def cell(load: dict[str, Any]) -> str:
        used, cap = load[side], load["capacity"]
        return (
            f"{_percent(load[f'utilization_{side}'])} "
            f"({used['vcpus']}/{cap['vcpus']} vCPU, {used['ram_mb'] // 1024}/"
            f"{cap['ram_mb'] // 1024} GiB)"
        )

    return cell


def _show_preview(preview: dict[str, Any]) -> None:
    console.print(
        f"[bold]dry run[/bold]: host {preview['host']} would go "
        f"{preview['from_state']} -> {preview['to_state']}; nothing was changed"
    )
    for note in preview["notes"]:
        console.print(f"  {note}")
    plan = preview["plan"]
    sizes = {i["name"]: i for i in preview["instances"]}
    rows = [
        {**entry, **sizes.get(entry["instance"], {})}
        for entry in plan["placements"] + plan["unplaced"]
    ]
    if rows:
        console.print()
        table(
            sorted(rows, key=lambda r: r["instance"]),
            [
                ("INSTANCE", lambda r: r["instance"]),
                ("SIZE", lambda r: f"{r.get('vcpus', '?')} vCPU, {r.get('ram_mb', '?')} MiB"),
                ("DESTINATION", lambda r: r["destination"] or "[red]none[/red]"),
                ("WHY NOT", lambda r: r.get("reason") or ""),
            ],
        )
    if plan["loads"]:
        console.print()
        table(
            plan["loads"],
            [
                ("DESTINATION", lambda d: d["host"]),
                ("GETS", lambda d: d["instances"]),
                ("LOAD BEFORE", _load("before")),
                ("LOAD AFTER", _load("after")),
            ],
        )


def _drain_policy(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs; `migration.key=value` goes to the migrations' convergence policy."""
    flat = parse_policy(pairs)
    nested = {
        k.removeprefix("migration."): v for k, v in flat.items() if k.startswith("migration.")
    }
    limits = {k: v for k, v in flat.items() if not k.startswith("migration.")}
    return limits | ({"migration": nested} if nested else {})


def _wait(ctx: typer.Context, name: str, timeout: float, *, quiet: bool) -> dict[str, Any]:
    client = api(ctx)
    return drain_view.follow(
        lambda: dict(client.get(_path(name, "maintenance"))), timeout, quiet=quiet
    )


@maintenance.command("enter")
def enter(
    ctx: typer.Context,
    name: Name,
    reason: Reason,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show the plan and pre-check; change nothing")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="enter even if some instances cannot be moved (partial)"),
    ] = False,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="drain policy override, e.g. max_outbound=1, "
            "migration.max_bandwidth_mib=200 (convergence policy of its migrations)"
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the drain ends")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 3600,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Put a host into maintenance: no new instance goes there, and it is drained."""
    result = api(ctx).post(
        _path(name, "maintenance", "enter"),
        {"reason": reason, "dry_run": dry_run, "force": force, "policy": _drain_policy(policy)},
    )
    if dry_run:
        emit_json(result) if fmt is Format.JSON else _show_preview(result)
        return
    if wait:
        result = _wait(ctx, name, timeout, quiet=fmt is Format.JSON)
    emit_json(result) if fmt is Format.JSON else _show_status(result)
    if result["maintenance"]["state"] == "drain_failed":
        raise CliError(f"the drain of {name} failed: {result['drain']['error'] or 'see status'}")


@maintenance.command("retry")
def retry(
    ctx: typer.Context,
    name: Name,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the drain ends")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 3600,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Retry a failed drain: the instances still on the host get fresh attempts."""
    result = api(ctx).post(_path(name, "maintenance", "retry"), {})
    if wait:
        result = _wait(ctx, name, timeout, quiet=fmt is Format.JSON)
    emit_json(result) if fmt is Format.JSON else _show_status(result)
    if result["maintenance"]["state"] == "drain_failed":
        raise CliError(f"the drain of {name} failed: {result['drain']['error'] or 'see status'}")


@maintenance.command("exit")
def exit_(
    ctx: typer.Context, name: Name, reason: OptReason = None, fmt: FormatOpt = Format.TABLE
) -> None:
    """Put a host back in service (cancels a drain in progress)."""
    result = api(ctx).post(_path(name, "maintenance", "exit"), {"reason": reason})
    emit_json(result) if fmt is Format.JSON else _show_status(result)


@maintenance.command("status")
def status(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Show a host's maintenance state and its latest drain."""
    result = api(ctx).get(_path(name, "maintenance"))
    emit_json(result) if fmt is Format.JSON else _show_status(result)
