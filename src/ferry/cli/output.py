"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

# Piped output is read by scripts and pagers: do not wrap it at 80 columns.
# No emoji codes: a MAC such as 52:54:00:ab:87:29 holds ":ab:", which rich would print as an emoji.
console = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="table for people, json for scripts")
]


def when(value: str | None) -> str:
    """An API timestamp as 'YYYY-MM-DD HH:MM:SS' (UTC), or '-'."""
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, Callable[[dict[str, Any]], Any]]],
    *,
    empty: str = "nothing to show",
) -> None:
    if not rows:
        console.print(f"[dim]{empty}[/dim]")
        return
    out = Table(box=None, header_style="bold", pad_edge=False)
    for title, _ in columns:
        out.add_column(title)
    for row in rows:
        out.add_row(*(str(value(row)) for _, value in columns))
    console.print(out)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        console.print(f"[bold]{label.ljust(width)}[/bold]  {value if value is not None else '-'}")


STATE_STYLE = {
    "in_service": "green",
    "draining": "yellow",
    "in_maintenance": "cyan",
    "drain_failed": "red",
    "up": "green",
    "down": "red",
    "enabled": "green",
    "disabled": "yellow",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}


def styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/{style}]" if style else state
