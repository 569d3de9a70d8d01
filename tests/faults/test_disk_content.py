"""What "intact" means for a fake host's disk: its content (image, size and what its guest
wrote) read where it lies (faults/disks.py). A live move on local storage carries the source's
content into the destination's copy once the copy completes (the fake mirror's wire), so a
completed copy reads as the source's disk did; a copy that never completed, or a record cut
short, is flagged `disk-corrupt` by the invariants."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ferry.agent.config import StorageSettings
from ferry.agent.drivers.base import (
    DiskCopy,
    DiskSpec,
    GuestSpec,
    HostFacts,
    ImageSpec,
    MigrationChannel,
    MigrationParams,
)
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.drivers.fake_disks import FakeDiskStore
from ferry.faults.disks import fake_disk_reading
from ferry.faults.invariants import (
    DiskReading,
    GuestCopy,
    HostDisks,
    HostRecord,
    InstanceRecord,
    Kind,
    Snapshot,
    check,
)

FACTS = HostFacts(4, 4096, 50, "qemu64", "7.2", "pc-q35-7.2")
IMAGE = ImageSpec("0e3c9a52-0000-4000-8000-00000000000a", "lab", "raw", 10, 8 << 10, "a" * 64)
# a small disk and a fast link: the copy and the RAM take a fraction of a second
SPEC = GuestSpec(
    "00000000-0000-4000-8000-000000000001", "vm1", 1, 16, disk=DiskSpec(IMAGE, 4 << 20)
)
PARAMS = MigrationParams(max_bandwidth_bytes=1 << 30)
CHANNEL = MigrationChannel("127.0.0.1", 61000, "h2", disk_port=62000)


def host(tmp_path: Path, name: str) -> FakeDriver:
    own = tmp_path / name
    own.mkdir()
    storage = StorageSettings(path=own / "disks", image_cache=own / "images")
    return FakeDriver(
        FACTS, own / "state.json", disks=FakeDiskStore(storage), wire=tmp_path / "wire"
    )


def disk(tmp_path: Path, name: str) -> Path:
    return tmp_path / name / "disks" / SPEC.id / "disk.qcow2"


async def _move(source: FakeDriver, target: FakeDriver) -> None:
    """The controller's calls of a live move with a local disk, to the hand-over."""
    await target.prepare_incoming(
        SPEC, CHANNEL.port, PARAMS, DiskCopy(CHANNEL.disk_port or 0, "h1")
    )
    await source.migrate(SPEC.id, CHANNEL, PARAMS)  # the disk first
    for _ in range(200):
        status = (await source.migration_status(SPEC.id)).status
        if status == "completed":
            return
        if status == "mirroring" and (await source.migration_status(SPEC.id)).disk_ready:
            await source.migrate(SPEC.id, CHANNEL, PARAMS)  # in sync: the RAM follows
        await asyncio.sleep(0.02)
    raise AssertionError(f"the move never completed ({status})")


def snapshot_of(reading: DiskReading | None, before: DiskReading | None) -> Snapshot:
    vm = InstanceRecord(SPEC.id, "vm1", "running", "h2", image="lab")
    return Snapshot(
        instances=[vm],
        hosts=[HostRecord("h1"), HostRecord("h2")],
        drains=[],
        migrations=[],
        guests={"h1": [], "h2": [GuestCopy(SPEC.id, "vm1", "running")]},
        disks={
            "h1": HostDisks("local", "", frozenset()),
            "h2": HostDisks("local", "", frozenset({SPEC.id})),
        },
        disk_readings={SPEC.id: reading} if reading else {},
        disk_before={SPEC.id: before.digest} if before and before.digest else {},
    )


async def test_a_completed_copy_holds_what_the_source_held(tmp_path: Path) -> None:
    source, target = host(tmp_path, "h1"), host(tmp_path, "h2")
    await source.spawn(SPEC)
    before = fake_disk_reading(disk(tmp_path, "h1"))
    assert before is not None and before.problem is None and before.digest
    assert json.loads(disk(tmp_path, "h1").read_text())["data"]  # the guest wrote data
    await _move(source, target)
    empty = fake_disk_reading(disk(tmp_path, "h2"))  # before finish-destination: not taken yet
    assert empty is not None and empty.problem is not None
    await target.finish_destination(SPEC.id)
    await source.finish_source(SPEC.id)
    after = fake_disk_reading(disk(tmp_path, "h2"))
    assert after == before  # the same content, its path and its image's path aside
    assert not disk(tmp_path, "h1").exists()
    assert check(snapshot_of(after, before)) == []


async def test_a_copy_that_never_completed_is_flagged(tmp_path: Path) -> None:
    """A destination that took over before the copy completed (it runs on the empty overlay it
    was made as) holds none of the guest's data: its content differs and it fails its check."""
    source, target = host(tmp_path, "h1"), host(tmp_path, "h2")
    await source.spawn(SPEC)
    before = fake_disk_reading(disk(tmp_path, "h1"))
    await target.prepare_incoming(SPEC, CHANNEL.port, PARAMS, DiskCopy(62000, "h1"))
    await source.migrate(SPEC.id, CHANNEL, PARAMS)  # mirroring: nothing sent yet
    target.arrive(SPEC.id)
    await target.finish_destination(SPEC.id)
    after = fake_disk_reading(disk(tmp_path, "h2"))
    assert after is not None and before is not None and after.digest != before.digest
    [found] = check(snapshot_of(after, before))
    assert found.kind is Kind.DISK_CORRUPT
    assert "holds none of its guest's data" in found.message


def test_a_record_cut_short_or_changed_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "disk.qcow2"
    assert fake_disk_reading(path) is None  # no disk there: `disk-lost` judges that
    good = {"image": "a" * 64, "size": 4 << 20, "base": "/h1/images/x", "data": "d" * 32}
    path.write_text(json.dumps(good))
    before = fake_disk_reading(path)
    path.write_text(json.dumps(good)[:40])  # truncated
    truncated = fake_disk_reading(path)
    assert truncated is not None and truncated.problem is not None
    assert [v.kind for v in check(snapshot_of(truncated, before))] == [Kind.DISK_CORRUPT]
    path.write_text(json.dumps({**good, "data": "e" * 32}))  # another guest's data
    other = fake_disk_reading(path)
    assert other is not None and other.problem is None
    [found] = check(snapshot_of(other, before))
    assert found.kind is Kind.DISK_CORRUPT and "does not hold what it held" in found.message
    path.write_text(json.dumps({**good, "base": "/h2/images/x"}))  # moved: another cache path
    assert fake_disk_reading(path) == before
