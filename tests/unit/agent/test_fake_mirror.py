"""The fake driver's disk mirror: the model (a pure function of elapsed time) and the driver
around it, on a clock the tests move: readings before, at and after the copy is in sync, a
guest that writes, a bandwidth change, a cut link, an agent restart, a lost destination."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from ferry.agent.config import StorageSettings
from ferry.agent.drivers import fake_source
from ferry.agent.drivers.base import (
    DiskCopy,
    DiskSpec,
    DriverError,
    GuestPower,
    GuestSpec,
    HostFacts,
    ImageSpec,
    MigrationChannel,
    MigrationEvent,
    MigrationParams,
)
from ferry.agent.drivers.fake import Crash, FakeDriver
from ferry.agent.drivers.fake_disks import FakeDiskStore
from ferry.agent.drivers.fake_migration import MIB
from ferry.agent.drivers.fake_mirror import (
    ALLOCATED_SHARE,
    SimulatedMirror,
    allocated_bytes,
    mirror_of,
)

FACTS = HostFacts(4, 4096, 50, "qemu64", "7.2", "pc-q35-7.2")
IMAGE = ImageSpec("0e3c9a52-0000-4000-8000-00000000000a", "lab", "qcow2", 10, 64 * MIB, "a" * 64)
DISK = DiskSpec(IMAGE, 64 * MIB)  # 16 MiB allocated: 1 s at 16 MiB/s
ID = "00000000-0000-0000-0000-000000000001"
SPEC = GuestSpec(ID, "vm1", 1, 16, disk=DISK)
CHANNEL = MigrationChannel("host-b", 49152, "host-b", disk_port=49153)
PARAMS = MigrationParams(16 * MIB)  # the mirror: 1 s; the RAM (16 MiB): 1 s
MBPS = 16 * MIB * 8 / 1e6  # the bandwidth in Mbit/s


# -- the model ----------------------------------------------------------------------------------


def test_a_quarter_of_the_disk_is_copied() -> None:
    assert ALLOCATED_SHARE == 4
    assert allocated_bytes(DISK) == 16 * MIB
    assert mirror_of(DISK, 0, 16 * MIB).at(0).total_bytes == 16 * MIB


def test_an_idle_guests_mirror_is_in_sync_once_its_allocated_bytes_are_copied() -> None:
    mirror = mirror_of(DISK, 0, 16 * MIB)
    assert mirror.ready_at == pytest.approx(1.0)
    start, half, done, later = (mirror.at(t) for t in (0.0, 0.5, 1.0, 5.0))
    assert (start.copied_bytes, start.ready) == (0, False)
    assert (half.total_bytes, half.copied_bytes, half.ready) == (16 * MIB, 8 * MIB, False)
    assert half.throughput_mbps == pytest.approx(MBPS)
    assert (done.copied_bytes, done.ready) == (16 * MIB, True)
    assert (later.total_bytes, later.copied_bytes, later.ready) == (16 * MIB, 16 * MIB, True)
    assert later.throughput_mbps == 0.0  # in sync and nothing written: nothing moves


def test_guest_writes_reach_both_ends_so_the_total_grows_and_the_copy_converges() -> None:
    mirror = mirror_of(DISK, 1024, 16 * MIB)  # 1 MiB/s of writes
    half, later = mirror.at(0.5), mirror.at(3.0)
    assert (half.total_bytes, half.copied_bytes) == (16 * MIB + MIB // 2, 8 * MIB + MIB // 2)
    assert not half.ready and mirror.ready_at == pytest.approx(1.0)
    assert later.total_bytes == later.copied_bytes == 19 * MIB and later.ready
    assert later.throughput_mbps == pytest.approx(MIB * 8 / 1e6)  # the writes only


def test_a_bandwidth_change_applies_from_then_on() -> None:
    mirror = mirror_of(DISK, 0, 16 * MIB).tuned(0.5, 32 * MIB)
    assert mirror.at(0.25).copied_bytes == 4 * MIB  # what was copied before stays as it was
    assert mirror.at(0.625).copied_bytes == 12 * MIB  # 8 MiB by 0.5 s, then 32 MiB/s
    assert mirror.ready_at == pytest.approx(0.75)
    assert mirror.at(0.7).throughput_mbps == pytest.approx(2 * MBPS)
    slower = mirror.tuned(0.625, 4 * MIB)
    assert slower.ready_at == pytest.approx(1.625)  # 4 MiB left at 4 MiB/s
    assert slower == SimulatedMirror(
        16 * MIB, 0, ((0.0, 16 * MIB), (0.5, 32 * MIB), (0.625, 4 * MIB))
    )
    assert slower.at(0.25).copied_bytes == 4 * MIB and slower.at(1.125).copied_bytes == 14 * MIB
    stalled = mirror_of(DISK, 0, 16 * MIB).tuned(0.5, 0)
    assert stalled.ready_at == float("inf") and stalled.at(9.0).copied_bytes == 8 * MIB


# -- the driver, on a clock the test moves ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(fake_source, "time", SimpleNamespace(time=clock.time))
    return clock


def local_host(tmp_path: Path, name: str) -> FakeDriver:
    storage = StorageSettings(path=tmp_path / name / "disks", image_cache=tmp_path / name / "i")
    return FakeDriver(FACTS, tmp_path / name / "state.json", disks=FakeDiskStore(storage))


async def _source(tmp_path: Path, spec: GuestSpec = SPEC) -> FakeDriver:
    driver = local_host(tmp_path, "a")
    await driver.spawn(spec)
    return driver


async def test_the_disk_goes_first_then_the_ram_and_the_counters_stay(
    tmp_path: Path, clock: Clock
) -> None:
    spec = GuestSpec(ID, "vm1", 1, 16, disk=DISK, disk_write_kibps=1024)
    source = await _source(tmp_path, spec)
    await source.migrate(ID, CHANNEL, PARAMS)
    clock.advance(0.5)
    half = await source.migration_status(ID)
    assert (half.status, half.disk_ready, half.transferred_bytes) == ("mirroring", False, 0)
    assert (half.disk_total_bytes, half.disk_copied_bytes) == (16.5 * MIB, 8.5 * MIB)
    assert half.disk_throughput_mbps == pytest.approx(MBPS)
    await source.migrate(ID, CHANNEL, PARAMS)  # not in sync: nothing changes
    assert await source.migration_status(ID) == half
    clock.advance(1.0)
    synced = await source.migration_status(ID)
    assert (synced.status, synced.disk_ready) == ("mirroring", True)
    assert synced.disk_total_bytes == synced.disk_copied_bytes == 17.5 * MIB
    await source.migrate(ID, CHANNEL, PARAMS)  # in sync: the RAM now
    clock.advance(0.5)
    ram = await source.migration_status(ID)
    assert (ram.status, ram.transferred_bytes, ram.disk_ready) == ("active", 8 * MIB, True)
    assert ram.disk_total_bytes == ram.disk_copied_bytes == 18 * MIB  # still written to
    clock.advance(10.0)
    done = await source.migration_status(ID)
    assert done.status == "completed" and done.total_time_ms is not None
    # The counters as they were when the stream completed (1.5 s + its total time), not now.
    at_end = int((1.5 + done.total_time_ms / 1000) * MIB)
    assert done.disk_total_bytes == done.disk_copied_bytes == 16 * MIB + at_end
    clock.advance(10.0)
    assert await source.migration_status(ID) == done
    assert (await source.get(ID)).power is GuestPower.PAUSED  # type: ignore[union-attr]


async def test_a_tune_changes_the_mirrors_bandwidth_for_the_rest(
    tmp_path: Path, clock: Clock
) -> None:
    source = await _source(tmp_path)
    await source.migrate(ID, CHANNEL, PARAMS)
    clock.advance(0.5)
    await source.tune_migration(ID, max_bandwidth_bytes=32 * MIB, downtime_limit_ms=50)
    with pytest.raises(DriverError, match=f"no migration of {ID} in progress"):
        await source.tune_migration(ID, start_postcopy=True)  # no RAM stream yet
    clock.advance(0.125)
    reading = await source.migration_status(ID)
    assert (reading.disk_copied_bytes, reading.disk_ready) == (12 * MIB, False)
    assert reading.disk_throughput_mbps == pytest.approx(2 * MBPS)
    clock.advance(0.125)
    assert (await source.migration_status(ID)).disk_ready  # at 0.75 s, not 1 s


async def test_a_cut_link_stops_the_mirrors_clock_across_a_restart(
    tmp_path: Path, clock: Clock
) -> None:
    source = await _source(tmp_path)
    await source.migrate(ID, CHANNEL, PARAMS)
    clock.advance(0.25)
    source.set_link(up=False)
    clock.advance(5.0)
    frozen = await source.migration_status(ID)
    assert (frozen.status, frozen.disk_copied_bytes, frozen.disk_ready) == (
        "mirroring",
        4 * MIB,
        False,
    )
    restarted = local_host(tmp_path, "a")  # the agent restarts while the link is down
    assert await restarted.migration_status(ID) == frozen
    restarted.set_link(up=True)
    clock.advance(0.25)
    assert (await restarted.migration_status(ID)).disk_copied_bytes == 8 * MIB


async def test_a_restarted_agent_reads_where_the_mirror_got_and_goes_on(
    tmp_path: Path, clock: Clock
) -> None:
    source = await _source(tmp_path)
    await source.migrate(ID, CHANNEL, PARAMS)
    clock.advance(0.5)
    await source.tune_migration(ID, max_bandwidth_bytes=8 * MIB)
    before = await source.migration_status(ID)
    restarted = local_host(tmp_path, "a")
    assert await restarted.migration_status(ID) == before
    clock.advance(0.5)
    assert (await restarted.migration_status(ID)).disk_copied_bytes == 12 * MIB  # at 8 MiB/s
    clock.advance(0.5)
    assert (await restarted.migration_status(ID)).disk_ready
    await restarted.migrate(ID, CHANNEL, PARAMS)  # the mirror it found is in sync: the RAM
    assert (await restarted.migration_status(ID)).status == "active"


async def test_a_lost_destination_fails_the_mirror_and_the_guest_runs_on(
    tmp_path: Path, clock: Clock
) -> None:
    source = await _source(tmp_path)
    await source.migrate(ID, CHANNEL, PARAMS)
    clock.advance(0.5)
    assert source.peer_lost(ID) == "mirroring"
    failed = await source.migration_status(ID)
    assert failed.status == "failed" and "disk mirror" in (failed.error or "")
    assert (failed.disk_copied_bytes, failed.disk_ready) == (8 * MIB, False)
    clock.advance(5.0)
    assert await source.migration_status(ID) == failed  # nothing moves any more
    guest = await source.get(ID)
    assert guest is not None and guest.power is GuestPower.RUNNING
    await source.abort_migration(ID, source=True)  # the controller's unwind: it just runs on
    await source.migrate(ID, CHANNEL, PARAMS)  # a new attempt copies from scratch
    again = await source.migration_status(ID)
    assert (again.status, again.disk_copied_bytes) == ("mirroring", 0)


async def test_a_lost_destination_before_the_mirror_refuses_its_connection(
    tmp_path: Path, clock: Clock
) -> None:
    source = await _source(tmp_path)
    assert source.peer_lost(ID) == "none"
    await source.migrate(ID, CHANNEL, PARAMS)
    failed = await source.migration_status(ID)
    assert failed.status == "failed"
    assert failed.error == "the disk mirror failed: Failed to connect to host-b:49153"


async def test_a_crash_takes_the_mirror_with_the_guest(tmp_path: Path, clock: Clock) -> None:
    source = await _source(tmp_path)
    await source.migrate(ID, CHANNEL, PARAMS)
    assert source.crash(ID) == Crash(target=False, stream="mirroring")
    with pytest.raises(DriverError, match="does not run on this host"):
        await source.migration_status(ID)
    await source.spawn(SPEC)  # started again: its disk kept, no mirror
    assert (await source.migration_status(ID)).status == "none"
    assert source.disks_store is not None and source.disks_store.exists(ID)


async def test_a_mirror_needs_a_disk(tmp_path: Path, clock: Clock) -> None:
    source = await _source(tmp_path, GuestSpec(ID, "vm1", 1, 16))
    with pytest.raises(DriverError, match="has no disk to copy"):
        await source.migrate(ID, CHANNEL, PARAMS)
    assert (await source.migration_status(ID)).status == "none"


async def test_finishing_removes_the_sources_disk_aborting_the_targets_copy(
    tmp_path: Path, clock: Clock
) -> None:
    source, dest = await _source(tmp_path), local_host(tmp_path, "b")
    assert source.disks_store is not None and dest.disks_store is not None
    await dest.prepare_incoming(SPEC, 49152, PARAMS, DiskCopy(49153, "host-a"))
    assert dest.disks_store.exists(ID)
    await dest.abort_migration(ID, source=False)
    assert not dest.disks_store.exists(ID) and source.disks_store.exists(ID)
    with pytest.raises(DriverError, match="is running here, not handed over"):
        await source.finish_source(ID)
    assert source.disks_store.exists(ID)
    source._set_power(ID, GuestPower.PAUSED, "migrated away")  # its stream completed
    await source.finish_source(ID)
    assert not source.disks_store.exists(ID)


# -- events, on the wall clock ------------------------------------------------------------------


async def test_the_mirror_announces_its_start_and_when_it_is_in_sync(tmp_path: Path) -> None:
    source = await _source(tmp_path)
    heard: list[MigrationEvent] = []
    source.event_sink = heard.append
    await source.migrate(ID, CHANNEL, MigrationParams(160 * MIB))  # 16 MiB: 100 ms
    assert [e.status for e in heard] == ["mirroring"]
    assert not (await source.migration_status(ID)).disk_ready
    for _ in range(200):
        if len(heard) == 2:
            break
        await asyncio.sleep(0.01)
    assert [e.status for e in heard] == ["mirroring", "mirroring"]
    assert (await source.migration_status(ID)).disk_ready  # the event came once it was
    await source.migrate(ID, CHANNEL, MigrationParams(160 * MIB))
    assert [e.status for e in heard][2:] == ["active"]
