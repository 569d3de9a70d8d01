"""QEMU's migration events, heard on each guest's event monitor while the driver's commands use
the command monitor: a real migration over the driver's TLS channel, watched at both ends.

Needs root (a namespace of its own, so the migration port is private) and qemu-system-x86_64.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

from ferry.agent.drivers.base import GuestSpec, MigrationChannel, MigrationEvent, MigrationParams
from ferry.agent.drivers.qemu_argv import EVENTS_SOCK, QemuConfig, guest_argv, incoming_argv
from ferry.agent.drivers.qemu_events import EventWatch, connect
from ferry.agent.drivers.qemu_stream import listen, run, send, tcp_uri
from ferry.lab.image import GuestImage
from tests.lab.conftest import LOOPBACK, ImageGuests

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]

ADDRESS, PORT = LOOPBACK, 49200  # loopback of the test's own namespace
MIB = 2**20
PARAMS = MigrationParams(max_bandwidth_bytes=32 * MIB, downtime_limit_ms=300, auto_converge=False)
TIMEOUT = 60.0


async def _until(watch: EventWatch, status: str) -> None:
    """Until the watch heard `status`: woken by the events themselves, never by a poll."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while watch.status != status:
        assert watch.status != "failed", "the migration failed"
        assert loop.time() < deadline, f"still {watch.status} after {TIMEOUT:g} s"
        await watch.changed.wait(watch.changed.current(), deadline - loop.time())


async def test_both_ends_hear_the_migration_as_it_happens(
    image_built: GuestImage, image_guests: ImageGuests, creds: Path
) -> None:
    work = image_guests.workdir
    config = QemuConfig(run_dir=work, kernel=image_built.kernel, initrd=image_built.initrd)
    spec = GuestSpec(str(uuid.uuid4()), "events", 1, 128)
    source, dest = work / "src", work / "dst"
    source.mkdir()
    dest.mkdir()
    await image_guests.launch(guest_argv(config, spec, source, []), source / "qemu.pid")
    await image_guests.launch(
        [*guest_argv(config, spec, dest, []), *incoming_argv(creds)], dest / "qemu.pid"
    )
    heard: dict[str, list[MigrationEvent]] = {"source": [], "dest": []}
    watches = {
        "source": EventWatch(spec.id, source / EVENTS_SOCK, heard["source"].append),
        "dest": EventWatch(spec.id, dest / EVENTS_SOCK, heard["dest"].append),
    }
    for watch in watches.values():
        await watch.start()
    try:
        # The command monitors serve the driver's sessions while the event monitors are held.
        src = await connect(spec.id, str(source / "qmp.sock"))
        dst = await connect(spec.id, str(dest / "qmp.sock"))
        await listen(dst, PARAMS, tcp_uri(ADDRESS, PORT))
        await send(src, creds, MigrationChannel(ADDRESS, PORT, ADDRESS), PARAMS)
        await _until(watches["source"], "completed")
        await _until(watches["dest"], "completed")
        info = await run(src, "query-migrate")
        await src.disconnect()
        await dst.disconnect()

        statuses = [e.status for e in heard["source"]]
        assert statuses[0] == "setup" and statuses[-1] == "completed", statuses
        assert "active" in statuses and "failed" not in statuses
        passes = [e.passes for e in heard["source"] if e.passes]
        assert passes == sorted(passes) and passes[0] == 1, passes  # MIGRATION_PASS, in order
        assert passes[-1] == info["ram"]["dirty-sync-count"]  # as query-migrate counts them
        dest_statuses = [e.status for e in heard["dest"]]
        assert "active" in dest_statuses and dest_statuses[-1] == "completed", dest_statuses
        print(
            f"\nsource heard {watches['source'].heard} events ({statuses}),"
            f" destination {watches['dest'].heard} ({dest_statuses})"
        )

        # The source QEMU quits: its watch ends by itself, and wakes whoever waits on it.
        seen = watches["source"].changed.current()
        quitter = await connect(spec.id, str(source / "qmp.sock"))
        with contextlib.suppress(Exception):  # QEMU may close the socket before it answers
            await quitter.execute("quit")
        with contextlib.suppress(Exception):
            await quitter.disconnect()
        await asyncio.wait_for(watches["source"].changed.wait(seen, TIMEOUT), TIMEOUT)
        for _ in range(100):
            if not watches["source"].alive:
                break
            await asyncio.sleep(0.05)
        assert not watches["source"].alive and watches["dest"].alive
    finally:
        for watch in watches.values():
            await watch.close()
