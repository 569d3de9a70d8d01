"""ferry token create|list|revoke (admin)."""

from __future__ import annotations

from typing import Annotated

import typer

from ferry.cli.context import api
from ferry.cli.output import Format, FormatOpt, console, emit_json, table, when

app = typer.Typer(help="API tokens and their roles (admin only).", no_args_is_help=True)

COLUMNS = [
    ("ID", lambda t: t["id"]),
    ("NAME", lambda t: t["name"]),
    ("ROLE", lambda t: t["role"]),
    ("CREATED", lambda t: f"{when(t['created_at'])} by {t['created_by']}"),
    ("LAST USED", lambda t: when(t["last_used_at"])),
    ("REVOKED", lambda t: when(t["revoked_at"]) if t["revoked_at"] else ""),
]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="a name for the token's holder; the audit actor")],
    role: Annotated[str, typer.Option(help="reader, operator, admin or agent")],
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Create a token. Its secret is printed once and never again."""
    token = api(ctx).post("/v1/tokens", {"name": name, "role": role})
    if fmt is Format.JSON:
        emit_json(token)
        return
    typer.echo(f"token {token['name']} ({token['role']}) created; secret (shown once):", err=True)
    typer.echo(token["secret"])


@app.command("list")
def list_tokens(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="include revoked tokens")] = False,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """List tokens (never their secrets)."""
    tokens = api(ctx).get("/v1/tokens", include_revoked=all_ or None)
    emit_json(tokens) if fmt is Format.JSON else table(tokens, COLUMNS, empty="no tokens")


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="token name or id")],
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Revoke a token: it stops working at once."""
    token = api(ctx).delete(f"/v1/tokens/{name}")
    emit_json(token) if fmt is Format.JSON else console.print(f"token {token['name']} revoked")
