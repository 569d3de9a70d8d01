"""ferry event list [--follow]."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ferry.cli.context import api
from ferry.cli.output import Format, FormatOpt, console, table, when

app = typer.Typer(
    help="The event log: every state change and operator action.", no_args_is_help=True
)

COLUMNS = [
    ("ID", lambda e: e["id"]),
    ("TIME (UTC)", lambda e: when(e["at"])),
    ("KIND", lambda e: e["kind"]),
    ("ACTOR", lambda e: e["actor"]),
    ("HOST", lambda e: e["host"] or ""),
    ("MESSAGE", lambda e: e["message"]),
]


def _line(event: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.JSON:
        typer.echo(json.dumps(event, sort_keys=True), nl=True)
    else:
        console.print(
            f"{event['id']:>6}  {when(event['at'])}  {event['kind']:<28} "
            f"{event['actor']:<12} {event['host'] or '-':<12} {event['message']}"
        )


@app.command("list")
def list_events(
    ctx: typer.Context,
    kind: Annotated[list[str] | None, typer.Option(help="kind or prefix (repeatable)")] = None,
    host: Annotated[str | None, typer.Option(help="only this host")] = None,
    actor: Annotated[str | None, typer.Option(help="only this actor (token name)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many of the latest")] = 50,
    follow: Annotated[bool, typer.Option("--follow", help="then stream new events")] = False,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Show the latest events, oldest first; with --follow keep printing new ones."""
    client = api(ctx)
    filters = {"kind": kind, "host": host, "actor": actor}
    page = client.get("/v1/events", limit=limit, order="desc", **filters)
    events = list(reversed(page["items"]))
    if fmt is Format.JSON and not follow:
        typer.echo(json.dumps(events, indent=2, sort_keys=True))
    elif not follow:
        table(events, COLUMNS, empty="no event matches")
    else:
        for event in events:
            _line(event, fmt)
        last = events[-1]["id"] if events else 0
        if not events:
            latest = client.get("/v1/events", limit=1, order="desc")["items"]
            last = latest[0]["id"] if latest else 0
        try:
            for streamed in client.follow("/v1/events/stream", last, **filters):
                _line(streamed.data, fmt)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
