"""The fake driver keeps the QEMU driver's disk rules: a disk is made by the first start and kept
by every migration step, removed only by a delete; a target opens the source's disk on shared
storage and refuses one on local storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.agent.config import StorageSettings
from ferry.agent.drivers.base import (
    DiskSpec,
    DriverError,
    GuestPower,
    GuestSpec,
    HostFacts,
    ImageSpec,
    MigrationChannel,
    MigrationParams,
)
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.drivers.fake_disks import FakeDiskStore

FACTS = HostFacts(4, 4096, 50, "qemu64", "7.2", "pc-q35-7.2")
IMAGE = ImageSpec("0e3c9a52-0000-4000-8000-00000000000a", "lab", "qcow2", 10, 256 << 20, "a" * 64)
SPEC = GuestSpec(
    "00000000-0000-0000-0000-000000000001", "vm1", 1, 128, disk=DiskSpec(IMAGE, 1 << 30)
)
PARAMS = MigrationParams(max_bandwidth_bytes=100 << 20)


def host(tmp_path: Path, name: str, shared: Path | None) -> FakeDriver:
    own = tmp_path / name
    own.mkdir()
    storage = (
        StorageSettings(kind="shared", pool="p1", path=shared, image_cache=own / "images")
        if shared
        else StorageSettings(path=own / "disks", image_cache=own / "images")
    )
    return FakeDriver(FACTS, own / "state.json", disks=FakeDiskStore(storage))


async def test_a_disk_outlives_every_migration_step_and_goes_with_the_instance(
    tmp_path: Path,
) -> None:
    pool = tmp_path / "pool"
    source, target = host(tmp_path, "h1", pool), host(tmp_path, "h2", pool)
    await source.spawn(SPEC)
    disk = pool / SPEC.id / "disk.qcow2"
    assert json.loads(disk.read_text())["size"] == 1 << 30
    await target.prepare_incoming(SPEC, 61000, PARAMS)
    await target.abort_migration(SPEC.id, source=False)  # an unwound target leaves the disk
    assert disk.is_file()
    await target.prepare_incoming(SPEC, 61000, PARAMS)
    await source.migrate(SPEC.id, MigrationChannel("h2", 61000, "h2"), PARAMS)
    target.arrive(SPEC.id)
    await target.finish_destination(SPEC.id)
    source._set_power(SPEC.id, GuestPower.PAUSED, "handed over")  # its stream completed
    await source.finish_source(SPEC.id)  # the source's copy goes, the shared disk stays
    assert disk.is_file() and await source.get(SPEC.id) is None
    await target.destroy(SPEC.id)
    assert not disk.exists()


async def test_a_target_cannot_open_a_disk_it_cannot_reach(tmp_path: Path) -> None:
    local = host(tmp_path, "h1", None)
    with pytest.raises(DriverError, match="another host's local storage"):
        await local.prepare_incoming(SPEC, 61000, PARAMS)
    other_pool = host(tmp_path, "h3", tmp_path / "other-pool")
    with pytest.raises(DriverError, match="not in this host's pool 'p1'"):
        await other_pool.prepare_incoming(SPEC, 61000, PARAMS)
    assert await local.list() == [] and await other_pool.list() == []


async def test_a_start_again_keeps_the_guests_data(tmp_path: Path) -> None:
    driver = host(tmp_path, "h1", None)
    await driver.spawn(SPEC)
    disk = tmp_path / "h1" / "disks" / SPEC.id / "disk.qcow2"
    disk.write_text(disk.read_text() + " ")
    driver.crash(SPEC.id)
    await driver.spawn(SPEC)
    assert disk.read_text().endswith(" ")


async def test_a_local_disk_is_listed_with_what_its_mirror_copies(tmp_path: Path) -> None:
    """The fake's local disk holds what the simulated mirror copies (a quarter of its virtual
    size); a shared pool lists no sizes."""
    local = host(tmp_path, "h1", None)
    await local.spawn(SPEC)
    inventory = await local.disks()
    assert inventory is not None and inventory.allocated == {SPEC.id: (1 << 30) // 4}
    shared = host(tmp_path, "h2", tmp_path / "pool")
    await shared.spawn(SPEC)
    pooled = await shared.disks()
    assert pooled is not None and pooled.allocated == {}
