"""The CLI prints what the API says, verbatim: rich's emoji codes must not rewrite a MAC such as
52:54:00:ab:87:29 (":ab:" is an emoji code). A migration's progress reads its RAM and, when it
copies a local disk, the disk beside it: figures, bars on a terminal, a drain's totals."""

from __future__ import annotations

import re
import time
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from ferry.cli import drain_view, migrations, progress_view
from ferry.cli.output import console, table


def test_macs_print_as_they_are() -> None:
    mac = "52:54:00:ab:87:29"
    with console.capture() as captured:
        console.print(f"port {mac}")
        table([{"mac": mac}], [("MAC", lambda r: r["mac"])])
    assert captured.get().count(mac) == 2


# -- a migration's progress: the RAM, and a local disk's copy beside it ---------------------------

MIB = 2**20
SLEEP = time.sleep


def disk(copied: int, total: int = 256, *, ready: bool = False) -> dict[str, Any]:
    return {
        "total_bytes": total * MIB,
        "copied_bytes": copied * MIB,
        "remaining_bytes": (total - copied) * MIB,
        "throughput_mbps": 0.0 if ready else 536.9,
        "ready": ready,
    }


def migration(state: str = "running", copy: dict[str, Any] | None = None, **ram: Any) -> Any:
    return {
        "id": "m1",
        "instance": "vm1",
        "source": "host1",
        "destination": "host2",
        "attempt": 1,
        "state": state,
        "bytes_total": None,
        "bytes_sent": None,
        "bytes_remaining": None,
        "throughput_mbps": None,
        "passes": None,
        "dirty_rate": None,
        "error": None,
        "disk": copy,
        **ram,
    }


def test_a_disk_reads_copied_of_total_with_its_throughput_then_in_sync() -> None:
    mirroring, synced = migration(copy=disk(64)), migration(copy=disk(256, ready=True))
    assert progress_view.disk_line(mirroring) == " disk 64/256 MiB 537 Mbit/s"
    assert progress_view.disk_line(synced) == " disk 256/256 MiB in sync"
    assert progress_view.disk_cell(mirroring) == "64/256"
    assert progress_view.disk_summary(mirroring["disk"]) == (
        "64 of 256 MiB copied, 192 MiB remaining, 537 Mbit/s"
    )
    assert progress_view.disk_summary(synced["disk"]).endswith("0 MiB remaining, in sync")
    assert progress_view.disk_bar(mirroring) == {
        "total": 256 * MIB,
        "completed": 64 * MIB,
        "detail": "537 Mbit/s",
    }
    assert progress_view.copying(mirroring) and not progress_view.copying(synced)


def test_a_migration_without_a_disk_shows_none() -> None:
    ram_only = migration(bytes_total=128 * MIB, bytes_sent=64 * MIB)
    assert progress_view.disk_line(ram_only) == ""
    assert progress_view.disk_cell(ram_only) == "-"
    assert progress_view.disk_bar(ram_only) is None
    assert not progress_view.copying(ram_only)


def test_totals_keep_the_disk_apart_from_the_ram() -> None:
    moves = [
        migration(bytes_total=128 * MIB, bytes_sent=128 * MIB, copy=disk(256, ready=True)),
        migration(bytes_total=None, bytes_sent=None, copy=disk(64)),
        migration(bytes_total=128 * MIB, bytes_sent=32 * MIB),
    ]
    moved = progress_view.totals(moves)
    assert moved == progress_view.Totals(160 * MIB, 256 * MIB, 320 * MIB, 512 * MIB, 2)
    assert progress_view.totals_text(moved) == (
        "RAM 160 of 256 MiB sent, disk 320 of 512 MiB copied"
    )
    assert progress_view.totals_text(progress_view.totals(moves[2:])) == ("RAM 32 of 128 MiB sent")


def _terminal(monkeypatch: pytest.MonkeyPatch, module: Any) -> StringIO:
    """The module prints on a terminal of its own; its polls are a quarter of a second apart,
    so that rich (refreshing 10 times a second) draws each reading."""
    screen = StringIO()
    monkeypatch.setattr(module, "console", Console(file=screen, force_terminal=True, width=200))
    monkeypatch.setattr(module.time, "sleep", lambda _: SLEEP(0.25))
    return screen


def test_migrate_wait_draws_a_disk_bar_beside_the_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _terminal(monkeypatch, migrations)
    readings = iter(
        [
            migration(copy=disk(64)),
            migration(copy=disk(256, ready=True), bytes_total=128 * MIB, bytes_sent=64 * MIB),
            migration(
                "completed", disk(256, ready=True), bytes_total=128 * MIB, bytes_sent=128 * MIB
            ),
        ]
    )
    client = SimpleNamespace(get=lambda path: next(readings))
    ended = migrations._follow(client, migration("scheduled"), quiet=False)  # type: ignore[arg-type]
    assert ended["state"] == "completed"
    drawn = screen.getvalue()
    assert "vm1 host1 -> host2" in drawn and "  disk" in drawn
    assert "running: copying the disk first" in drawn and "in sync" in drawn


def test_the_drain_view_draws_a_disk_bar_for_a_local_disk_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = _terminal(monkeypatch, drain_view)
    moves = [
        migration(copy=disk(64)) | {"instance": "vm1"},
        migration(bytes_total=128 * MIB, bytes_sent=32 * MIB) | {"instance": "vm2"},
    ]
    draining = {
        "host": "host1",
        "maintenance": {"state": "draining"},
        "drain": {"instances_total": 2, "instances_moved": 0},
        "instances_remaining": 2,
        "migrations": moves,
    }
    readings = iter([draining, draining | {"maintenance": {"state": "in_maintenance"}}])
    drain_view.follow(lambda: next(readings), 60, quiet=False)
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).split("\r")[-1]
    rows = [line.split() for line in last.splitlines()]
    assert rows[0][:5] == ["drain", "of", "host1:", "0/2", "moved,"]
    assert " ".join(rows[0]).count("RAM 32 of 128 MiB sent, disk 64 of 256 MiB copied") == 1
    assert rows[1][:3] == ["vm1", "->", "host2"] and "copying the disk first" in " ".join(rows[1])
    assert rows[2][0] == "disk" and "64.0/256.0 MiB 537 Mbit/s" in " ".join(rows[2])
    assert rows[3][:3] == ["vm2", "->", "host2"] and len(rows) == 4  # no disk bar for vm2
