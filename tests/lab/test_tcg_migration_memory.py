"""A live migration under TCG carries guest memory byte for byte.

QEMU before 9.0 loses guest writes while migrating a TCG guest whose RAM is a whole number of
256 KiB blocks (its fast dirty-bitmap sync leaves the vCPU's TLB writing pages it no longer
tracks); the destination then runs on stale pages, which showed as guests that crashed and
rebooted after a drain, or broke their virtio rings. The QEMU driver therefore sizes a TCG
guest's RAM off that grid (`qemu_argv.TCG_RAM_PAD_KIB`).

This test checks the outcome where it is exact: a guest dirtying memory is migrated over the
driver's own TLS channel (the same command line, credentials and QMP sequence) to a destination
started with `-S`, so at completion both ends are paused on what should be the same state; both
memories are dumped and compared page by page. Several rounds from one source (it resumes after
each) raise the odds of a lost write. With 128 MiB exactly (`-m 128`), the same rounds showed
differing pages in about one migration in three on this kind of machine.

Needs root (a namespace of its own, so the migration port is private) and qemu-system-x86_64.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from ferry.agent.drivers.base import GuestSpec, MigrationChannel, MigrationParams
from ferry.agent.drivers.qemu_argv import QemuConfig, guest_argv, incoming_argv
from ferry.agent.drivers.qemu_stream import listen, send, tcp_uri
from ferry.lab.image import GuestImage
from tests.lab.conftest import LOOPBACK, ImageGuests

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]

ROUNDS = 3
ADDRESS, PORT = LOOPBACK, 49152  # loopback of the test's own namespace
PAGE = 4096
MIB = 2**20
# Slow enough for several dirty-sync passes while the guest writes: the conditions of the loss.
PARAMS = MigrationParams(max_bandwidth_bytes=16 * MIB, downtime_limit_ms=300, auto_converge=False)
DIRTY_MIBPS = 8
TIMEOUT = 120.0


@asynccontextmanager
async def qmp(socket: Path) -> AsyncIterator[QMPClient]:
    client = QMPClient()
    for _ in range(100):
        try:
            await client.connect(str(socket))
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no QMP at {socket}")
    try:
        yield client
    finally:
        with contextlib.suppress(EOFError):  # the peer quit: its socket is gone
            await client.disconnect()


async def wait_status(client: QMPClient, wanted: str) -> dict[str, Any]:
    """query-migrate until `wanted`; a failure or a timeout fails the test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        info = await client.execute("query-migrate")
        assert isinstance(info, dict)
        if info.get("status") == wanted:
            return info
        assert info.get("status") != "failed", f"migration failed: {info}"
        assert loop.time() < deadline, f"migration still {info.get('status')}: {info}"
        await asyncio.sleep(0.1)


async def memory(client: QMPClient, size: int, dump: Path) -> bytes:
    await client.execute("pmemsave", {"val": 0, "size": size, "filename": str(dump)})
    data = await asyncio.to_thread(dump.read_bytes)
    await asyncio.to_thread(dump.unlink)
    return data


def differing_pages(a: bytes, b: bytes) -> list[int]:
    assert len(a) == len(b)
    return [at for at in range(0, len(a), PAGE) if a[at : at + PAGE] != b[at : at + PAGE]]


async def test_migrated_memory_equals_the_source_byte_for_byte(
    image_built: GuestImage, image_guests: ImageGuests, creds: Path
) -> None:
    work = image_guests.workdir
    config = QemuConfig(run_dir=work, kernel=image_built.kernel, initrd=image_built.initrd)
    spec = GuestSpec(str(uuid.uuid4()), "memcheck", 1, 128, (), DIRTY_MIBPS)
    source = work / "src"
    source.mkdir()
    await image_guests.launch(guest_argv(config, spec, source, []), source / "qemu.pid")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while "FERRY-GUEST-DIRTY" not in (source / "serial.log").read_text(errors="replace"):
        assert loop.time() < deadline, "the guest did not start dirtying memory"
        await asyncio.sleep(0.5)

    lost: dict[int, list[int]] = {}
    for round_ in range(ROUNDS):
        dest = work / f"dst{round_}"
        dest.mkdir()
        argv = [*guest_argv(config, spec, dest, []), *incoming_argv(creds), "-S"]
        await image_guests.launch(argv, dest / "qemu.pid")
        async with qmp(source / "qmp.sock") as src, qmp(dest / "qmp.sock") as dst:
            await listen(dst, PARAMS, tcp_uri(ADDRESS, PORT + round_))
            await send(src, creds, MigrationChannel(ADDRESS, PORT + round_, ADDRESS), PARAMS)
            done = await wait_status(src, "completed")
            await wait_status(dst, "completed")
            ram = done["ram"]
            assert isinstance(ram, dict) and ram["dirty-sync-count"] > 1, "no pass while dirtying"
            summary = await src.execute("query-memory-size-summary")
            assert isinstance(summary, dict)
            size = int(summary["base-memory"])
            assert size % (256 * 1024) != 0  # the driver's layout, off the fast-sync grid
            before = await memory(src, size, work / "src.mem")
            after = await memory(dst, size, work / "dst.mem")
            if pages := differing_pages(before, after):
                lost[round_] = pages
            await dst.execute("quit")
            await src.execute("cont")  # the source runs on for the next round
    assert not lost, "pages differ after migration (round: addresses): " + "; ".join(
        f"{r}: {len(p)} pages, first {[hex(a) for a in p[:5]]}" for r, p in lost.items()
    )
