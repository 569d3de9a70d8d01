"""ferry image create|list|show|delete: the controller's image catalog (and, from image_cmd,
`ferry image build`: the lab's guest image)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ferry.cli.client import CliError
from ferry.cli.context import api
from ferry.cli.output import Format, console, emit_json, fields, table, when

app = typer.Typer(
    help="Images: the controller's catalog (create, list, show, delete); build: the lab's.",
    no_args_is_help=True,
)

QCOW2_MAGIC = b"QFI\xfb"
CHUNK = 1 << 20
# An upload may take long, and the controller checks the file (qemu-img) before it answers.
UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=5.0)

Name = Annotated[str, typer.Argument(help="image name")]
# `--format` names the disk format here, so the output format is `-f` / `--output`.
OutputOpt = Annotated[
    Format, typer.Option("--output", "-f", help="table for people, json for scripts")
]


class DiskFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


def size_text(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def detect(head: bytes) -> DiskFormat:
    """qcow2 when the file starts with qcow2's magic, else raw."""
    return DiskFormat.QCOW2 if head.startswith(QCOW2_MAGIC) else DiskFormat.RAW


def _chunks(file: BinaryIO, advance: Callable[[int], None]) -> Iterator[bytes]:
    while chunk := file.read(CHUNK):
        advance(len(chunk))
        yield chunk


def _upload(ctx: typer.Context, name: str, path: Path, fmt: DiskFormat, size: int) -> Any:
    client = api(ctx)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True, emoji=False),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress, path.open("rb") as file:
        task = progress.add_task(f"uploading {name}", total=size)
        try:
            return client.request(
                "POST",
                "/v1/images",
                params={"name": name, "format": fmt.value},
                content=_chunks(file, lambda n: progress.advance(task, n)),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                timeout=UPLOAD_TIMEOUT,
            )
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    file: Annotated[Path, typer.Option("--file", help="the image file to upload")],
    disk_format: Annotated[
        DiskFormat | None,
        typer.Option("--format", help="qcow2 or raw [default: qcow2 if the file is one, else raw]"),
    ] = None,
    fmt: OutputOpt = Format.TABLE,
) -> None:
    """Upload an image; the controller measures its size, virtual size and SHA-256."""
    try:
        with file.open("rb") as handle:
            head = handle.read(len(QCOW2_MAGIC))
        size = file.stat().st_size
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from exc
    image = _upload(ctx, name, file, disk_format or detect(head), size)
    if fmt is Format.JSON:
        emit_json(image)
        return
    console.print(
        f"image {name} created: {image['format']}, {size_text(image['size_bytes'])}"
        f" (virtual {size_text(image['virtual_size_bytes'])}), sha256 {image['sha256']}"
    )


@app.command("list")
def list_(ctx: typer.Context, fmt: OutputOpt = Format.TABLE) -> None:
    """List images."""
    rows = api(ctx).get("/v1/images")
    if fmt is Format.JSON:
        emit_json(rows)
        return
    table(
        rows,
        [
            ("NAME", lambda i: i["name"]),
            ("FORMAT", lambda i: i["format"]),
            ("SIZE", lambda i: size_text(i["size_bytes"])),
            ("VIRTUAL", lambda i: size_text(i["virtual_size_bytes"])),
            ("SHA256", lambda i: i["sha256"][:12]),
            ("CREATED", lambda i: when(i["created_at"])),
        ],
        empty="no images",
    )


@app.command("show")
def show(ctx: typer.Context, name: Name, fmt: OutputOpt = Format.TABLE) -> None:
    """Show one image."""
    image = api(ctx).get(f"/v1/images/{quote(name, safe='')}")
    if fmt is Format.JSON:
        emit_json(image)
        return
    fields(
        [
            ("name", image["name"]),
            ("id", image["id"]),
            ("format", image["format"]),
            ("size", f"{size_text(image['size_bytes'])} ({image['size_bytes']} bytes)"),
            (
                "virtual",
                f"{size_text(image['virtual_size_bytes'])} ({image['virtual_size_bytes']} bytes)",
            ),
            ("sha256", image["sha256"]),
            ("created", f"{when(image['created_at'])} by {image['created_by']}"),
        ]
    )


@app.command("delete")
def delete(ctx: typer.Context, name: Name) -> None:
    """Delete an image that no instance uses."""
    api(ctx).delete(f"/v1/images/{quote(name, safe='')}")
    console.print(f"image {name} deleted")
