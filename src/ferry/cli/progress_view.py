"""How a migration's progress reads in the CLI: its RAM and, for an instance on local storage,
its disk copy beside it (copied of total, the copy's throughput, "in sync" once the RAM may
move). Shared by `ferry migration ...` and the drain view; pure functions of the API's JSON,
but for the bars' columns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.progress import BarColumn, DownloadColumn, ProgressColumn, TextColumn, TimeElapsedColumn

MIB = 2**20


def mib(value: int | None) -> str:
    """Bytes as whole MiB ('0' for none)."""
    return f"{(value or 0) / MIB:.0f}"


def bar_columns() -> tuple[ProgressColumn, ...]:
    """A progress row: description, bar, bytes of total, a detail field, time."""
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )


def copying(m: dict[str, Any]) -> bool:
    """The migration copies a disk that is not in sync yet (the RAM waits for it)."""
    disk = m.get("disk")
    return bool(disk and not disk["ready"])


def disk_detail(disk: dict[str, Any]) -> str:
    """'in sync' once the copy caught up, else its throughput (or 'copying')."""
    if disk["ready"]:
        return "in sync"
    if disk["throughput_mbps"]:
        return f"{disk['throughput_mbps']:.0f} Mbit/s"
    return "copying"


def disk_line(m: dict[str, Any]) -> str:
    """' disk 64/256 MiB 200 Mbit/s' for a migration with a disk, '' without."""
    disk = m.get("disk")
    if not disk:
        return ""
    return f" disk {mib(disk['copied_bytes'])}/{mib(disk['total_bytes'])} MiB {disk_detail(disk)}"


def disk_cell(m: dict[str, Any]) -> str:
    """A table cell: '64/256' MiB copied of the disk, '-' without a disk."""
    disk = m.get("disk")
    if not disk:
        return "-"
    return f"{mib(disk['copied_bytes'])}/{mib(disk['total_bytes'])}"


def disk_summary(disk: dict[str, Any]) -> str:
    """One migration's disk, for `migration show`."""
    text = (
        f"{mib(disk['copied_bytes'])} of {mib(disk['total_bytes'])} MiB copied, "
        f"{mib(disk['remaining_bytes'])} MiB remaining"
    )
    return text + (", in sync" if disk["ready"] else f", {disk_detail(disk)}")


def disk_bar(m: dict[str, Any]) -> dict[str, Any] | None:
    """What a disk's progress bar shows (`Progress.update` arguments); None without a disk."""
    disk = m.get("disk")
    if not disk:
        return None
    return {
        "total": disk["total_bytes"] or None,
        "completed": disk["copied_bytes"],
        "detail": disk_detail(disk),
    }


@dataclass(frozen=True)
class Totals:
    """What a set of migrations moves: RAM sent of its total, disk bytes copied of theirs."""

    ram_sent: int = 0
    ram_total: int = 0
    disk_copied: int = 0
    disk_total: int = 0
    disks: int = 0  # how many of the migrations copy a disk


def totals(migrations: Iterable[dict[str, Any]]) -> Totals:
    ram_sent = ram_total = disk_copied = disk_total = disks = 0
    for m in migrations:
        ram_sent += m["bytes_sent"] or 0
        ram_total += m["bytes_total"] or 0
        if disk := m.get("disk"):
            disks += 1
            disk_copied += disk["copied_bytes"]
            disk_total += disk["total_bytes"]
    return Totals(ram_sent, ram_total, disk_copied, disk_total, disks)


def totals_text(moved: Totals) -> str:
    """'RAM 384 of 384 MiB sent, disk 768 of 768 MiB copied' (the disk only when one moves)."""
    text = f"RAM {mib(moved.ram_sent)} of {mib(moved.ram_total)} MiB sent"
    if moved.disks:
        text += f", disk {mib(moved.disk_copied)} of {mib(moved.disk_total)} MiB copied"
    return text
