"""ferry server-group ..."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from ferry.cli.context import api
from ferry.cli.output import Format, FormatOpt, console, emit_json, fields, styled, table, when

app = typer.Typer(
    help="Server groups: keep instances on one host (affinity) or on different hosts"
    " (anti-affinity).",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="server group name")]
POLICY_HELP = (
    "affinity or anti-affinity (strict: an instance that cannot follow the rule is refused),"
    " soft-affinity or soft-anti-affinity (as far as the hosts allow)"
)


def _path(name: str) -> str:
    return f"/v1/server-groups/{quote(name, safe='')}"


def _members(group: dict[str, Any]) -> str:
    return ", ".join(f"{m['name']}@{m['host'] or '-'}" for m in group["members"]) or "-"


@app.command("create")
def group_create(
    ctx: typer.Context,
    name: Name,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)],
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Create a server group; instances join it with `ferry instance create --group`."""
    group = api(ctx).post("/v1/server-groups", {"name": name, "policy": policy})
    if fmt is Format.JSON:
        emit_json(group)
    else:
        console.print(f"server group {name} created ({group['policy']})")


@app.command("list")
def group_list(ctx: typer.Context, fmt: FormatOpt = Format.TABLE) -> None:
    """List server groups with their members and the hosts they run on."""
    rows = api(ctx).get("/v1/server-groups")
    if fmt is Format.JSON:
        emit_json(rows)
        return
    table(
        rows,
        [
            ("NAME", lambda g: g["name"]),
            ("POLICY", lambda g: g["policy"]),
            ("MEMBERS", lambda g: len(g["members"])),
            ("INSTANCES", _members),
        ],
        empty="no server groups",
    )


@app.command("show")
def group_show(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Show one server group and where its members run."""
    group = api(ctx).get(_path(name))
    if fmt is Format.JSON:
        emit_json(group)
        return
    fields(
        [
            ("name", group["name"]),
            ("policy", group["policy"]),
            ("members", len(group["members"])),
            ("created", f"{when(group['created_at'])} by {group['created_by']}"),
        ]
    )
    if group["members"]:
        console.print()
        table(
            group["members"],
            [
                ("INSTANCE", lambda m: m["name"]),
                ("HOST", lambda m: m["host"] or "-"),
                ("STATE", lambda m: styled(m["state"])),
            ],
        )


@app.command("delete")
def group_delete(ctx: typer.Context, name: Name) -> None:
    """Delete a server group that no instance belongs to."""
    api(ctx).delete(_path(name))
    console.print(f"server group {name} deleted")
