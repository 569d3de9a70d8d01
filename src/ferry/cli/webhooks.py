"""ferry webhook ..."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from ferry.cli.client import CliError
from ferry.cli.context import api
from ferry.cli.output import Format, FormatOpt, console, emit_json, fields, table, when

app = typer.Typer(
    help="Webhooks: maintenance, drain and migration events POSTed as signed CloudEvents"
    " (for a CMDB or a chat).",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="webhook name")]


def _path(name: str, action: str = "") -> str:
    return f"/v1/webhooks/{quote(name, safe='')}{action}"


def _state(hook: dict[str, Any]) -> str:
    return "enabled" if hook["enabled"] else "disabled"


@app.command("create")
def webhook_create(
    ctx: typer.Context,
    name: Name,
    url: Annotated[str, typer.Option(help="http(s) URL that receives the events")],
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="only events whose kind starts with this (repeatable), e.g. migration.failed;"
            " default: host.maintenance, drain, migration"
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(help="signing secret (16-256 characters); default: one is generated"),
    ] = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Subscribe a URL to the events from now on. The signing secret is printed once."""
    body: dict[str, Any] = {"name": name, "url": url}
    if kind:
        body["kinds"] = kind
    if secret is not None:
        body["secret"] = secret
    hook = api(ctx).post("/v1/webhooks", body)
    if fmt is Format.JSON:
        emit_json(hook)
        return
    typer.echo(
        f"webhook {hook['name']} created for {', '.join(hook['kinds'])};"
        " signing secret (shown once):",
        err=True,
    )
    typer.echo(hook["secret"])


@app.command("list")
def webhook_list(ctx: typer.Context, fmt: FormatOpt = Format.TABLE) -> None:
    """List webhooks and how their deliveries go (never their secrets)."""
    rows = api(ctx).get("/v1/webhooks")
    if fmt is Format.JSON:
        emit_json(rows)
        return
    table(
        rows,
        [
            ("NAME", lambda w: w["name"]),
            ("URL", lambda w: w["url"]),
            ("KINDS", lambda w: ",".join(w["kinds"])),
            ("STATE", _state),
            ("CURSOR", lambda w: w["cursor"]),
            ("PENDING", lambda w: w["pending"]),
            ("DELIVERED", lambda w: w["delivered"]),
            ("FAILURES", lambda w: w["failures"]),
        ],
        empty="no webhooks",
    )


@app.command("show")
def webhook_show(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Show one webhook: its cursor, backlog, attempts and last error."""
    hook = api(ctx).get(_path(name))
    if fmt is Format.JSON:
        emit_json(hook)
        return
    fields(
        [
            ("name", hook["name"]),
            ("url", hook["url"]),
            ("kinds", ", ".join(hook["kinds"])),
            ("state", _state(hook)),
            ("cursor", hook["cursor"]),
            ("pending", hook["pending"]),
            ("attempts", hook["attempts"]),
            ("delivered", hook["delivered"]),
            ("failures", hook["failures"]),
            ("last status", hook["last_status"]),
            ("last delivery", when(hook["last_delivery_at"])),
            ("last error", hook["last_error"]),
            ("last error at", when(hook["last_error_at"])),
            ("created", f"{when(hook['created_at'])} by {hook['created_by']}"),
        ]
    )


@app.command("delete")
def webhook_delete(ctx: typer.Context, name: Name) -> None:
    """Delete a webhook: its deliveries stop at once."""
    api(ctx).delete(_path(name))
    console.print(f"webhook {name} deleted")


@app.command("disable")
def webhook_disable(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Pause deliveries; the webhook keeps its place in the event log."""
    hook = api(ctx).post(_path(name, "/disable"))
    emit_json(hook) if fmt is Format.JSON else console.print(f"webhook {name} disabled")


@app.command("enable")
def webhook_enable(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Resume deliveries from where they stopped."""
    hook = api(ctx).post(_path(name, "/enable"))
    if fmt is Format.JSON:
        emit_json(hook)
    else:
        console.print(f"webhook {name} enabled; {hook['pending']} event(s) pending")


@app.command("test")
def webhook_test(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Send a signed ping (type io.ferry.webhook.ping) now; fails unless the receiver answers
    2xx in time."""
    result = api(ctx).post(_path(name, "/test"))
    if fmt is Format.JSON:
        emit_json(result)
    elif result["delivered"]:
        console.print(
            f"webhook {name}: ping {result['event_id']} delivered, HTTP {result['status']}"
            f" in {result['elapsed_ms']:g} ms"
        )
    if not result["delivered"]:
        raise CliError(f"webhook {name}: ping not delivered: {result['error']}")
