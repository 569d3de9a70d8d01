"""The driver contract (agent/drivers/base.py), the same tests against the fake and QEMU drivers:
whatever one does here, the other must do too (conftest.py makes the pairs)."""

from __future__ import annotations

import time
import uuid

import pytest

from ferry.agent.drivers.base import DriverError, GuestPower
from tests.contract.conftest import FAST, SLOW, DriverPair, PairFactory


async def test_spawn_is_idempotent(driver_pair: DriverPair) -> None:
    spec = driver_pair.spec()
    first = await driver_pair.source.spawn(spec)
    again = await driver_pair.source.spawn(spec)
    assert (again.id, again.pid) == (first.id, first.pid)
    assert [g.id for g in await driver_pair.source.list()] == [spec.id]
    assert driver_pair.processes(spec.id) == (1 if driver_pair.kind == "qemu" else 0)


async def test_destroy_of_a_missing_guest_succeeds(driver_pair: DriverPair) -> None:
    await driver_pair.source.destroy(str(uuid.uuid4()))
    spec = driver_pair.spec()
    await driver_pair.source.spawn(spec)
    await driver_pair.source.destroy(spec.id)
    await driver_pair.source.destroy(spec.id)
    assert await driver_pair.source.get(spec.id) is None
    assert driver_pair.processes(spec.id) == 0


async def test_list_and_get_report_spawned_guests_running(driver_pair: DriverPair) -> None:
    specs = [driver_pair.spec(), driver_pair.spec()]
    for spec in specs:
        await driver_pair.source.spawn(spec)
    listed = {g.id: g for g in await driver_pair.source.list()}
    assert set(listed) == {s.id for s in specs}
    for spec in specs:
        guest = await driver_pair.source.get(spec.id)
        assert guest is not None and guest == listed[spec.id]
        assert (guest.name, guest.power, len(guest.taps)) == (spec.name, GuestPower.RUNNING, 1)
    assert await driver_pair.source.get(str(uuid.uuid4())) is None


async def test_migration_status_of_an_unknown_guest_refuses(driver_pair: DriverPair) -> None:
    with pytest.raises(DriverError, match="does not run on this host"):
        await driver_pair.source.migration_status(str(uuid.uuid4()))
    with pytest.raises(DriverError, match="invalid instance id"):
        await driver_pair.source.migration_status("not-an-id!")


async def test_a_full_migration_moves_the_guest(driver_pair: DriverPair) -> None:
    pair, spec = driver_pair, driver_pair.spec()
    await pair.source.spawn(spec)
    assert (await pair.source.migration_status(spec.id)).status == "none"
    target = await pair.dest.prepare_incoming(spec, pair.port, FAST)
    assert (target.power, target.detail) == (GuestPower.INCOMING, "migration target (inmigrate)")
    again = await pair.dest.prepare_incoming(spec, pair.port, FAST)  # a retry: the same target
    assert (again.power, again.pid) == (GuestPower.INCOMING, target.pid)
    await pair.source.migrate(spec.id, pair.channel, FAST)
    done = await pair.complete(spec.id)
    assert done.total_bytes > 0 and done.transferred_bytes > 0
    source = await pair.source.get(spec.id)
    assert source is not None and source.power is GuestPower.PAUSED  # handed over
    with pytest.raises(DriverError, match="handed over already"):
        await pair.source.migrate(spec.id, pair.channel, FAST)
    with pytest.raises(DriverError, match="completed: the guest runs on the destination"):
        await pair.source.abort_migration(spec.id, source=True)
    with pytest.raises(DriverError, match="completed: the guest runs here now"):
        await pair.dest.abort_migration(spec.id, source=False)

    arrived = await pair.dest.finish_destination(spec.id)
    assert (arrived.power, arrived.id) == (GuestPower.RUNNING, spec.id)
    assert (await pair.dest.finish_destination(spec.id)).power is GuestPower.RUNNING  # again
    await pair.source.finish_source(spec.id)
    await pair.source.finish_source(spec.id)  # finished before: nothing to do
    assert await pair.source.get(spec.id) is None
    with pytest.raises(DriverError, match="does not run on this host"):
        await pair.source.migration_status(spec.id)
    running = await pair.dest.get(spec.id)
    assert running is not None and running.power is GuestPower.RUNNING
    assert pair.processes(spec.id) == (1 if pair.kind == "qemu" else 0)


async def test_finish_source_refuses_a_source_not_handed_over(driver_pair: DriverPair) -> None:
    spec = driver_pair.spec()
    await driver_pair.source.spawn(spec)
    with pytest.raises(DriverError, match="is running here, not handed over"):
        await driver_pair.source.finish_source(spec.id)
    guest = await driver_pair.source.get(spec.id)
    assert guest is not None and guest.power is GuestPower.RUNNING


async def test_an_abort_before_completion_keeps_the_source(driver_pair: DriverPair) -> None:
    pair, spec = driver_pair, driver_pair.spec()
    await pair.source.spawn(spec)
    await pair.dest.prepare_incoming(spec, pair.port, SLOW)
    await pair.source.migrate(spec.id, pair.channel, SLOW)
    await pair.source.migrate(spec.id, pair.channel, SLOW)  # a retry: already sending

    async def active() -> bool:
        return (await pair.source.migration_status(spec.id)).status == "active"

    await pair.until("active", active)
    await pair.source.tune_migration(spec.id, downtime_limit_ms=100)
    with pytest.raises(DriverError):  # post-copy was not enabled for this stream
        await pair.source.tune_migration(spec.id, start_postcopy=True)
    await pair.source.abort_migration(spec.id, source=True)
    await pair.source.abort_migration(spec.id, source=True)  # nothing in flight: runs on
    assert (await pair.source.migration_status(spec.id)).status == "cancelled"
    guest = await pair.source.get(spec.id)
    assert guest is not None and guest.power is GuestPower.RUNNING

    await pair.dest.abort_migration(spec.id, source=False)
    await pair.dest.abort_migration(spec.id, source=False)  # aborted before
    assert await pair.dest.get(spec.id) is None
    assert pair.processes(spec.id) == (1 if pair.kind == "qemu" else 0)


async def test_abort_of_a_destination_that_runs_the_guest_refuses(
    driver_pair: DriverPair,
) -> None:
    spec = driver_pair.spec()
    await driver_pair.dest.spawn(spec)
    with pytest.raises(DriverError, match="runs on this host as a guest, not as a target"):
        await driver_pair.dest.abort_migration(spec.id, source=False)
    guest = await driver_pair.dest.get(spec.id)
    assert guest is not None and guest.power is GuestPower.RUNNING


async def test_a_guest_here_cannot_be_prepared_as_a_target(driver_pair: DriverPair) -> None:
    spec = driver_pair.spec()
    first = await driver_pair.dest.spawn(spec)
    with pytest.raises(DriverError, match="already runs on this host; it cannot move here"):
        await driver_pair.dest.prepare_incoming(spec, driver_pair.port, FAST)
    guest = await driver_pair.dest.get(spec.id)
    assert guest is not None and (guest.power, guest.pid) == (GuestPower.RUNNING, first.pid)


async def test_a_restarted_driver_reattaches(driver_pair: DriverPair) -> None:
    pair, guest, moving = driver_pair, driver_pair.spec(), driver_pair.spec()
    await pair.source.spawn(guest)
    await pair.dest.prepare_incoming(moving, pair.port, FAST)
    hosts = [pair.source_host, pair.dest_host]
    before = [sorted((g.id, g.power, g.pid) for g in await h.driver.list()) for h in hosts]
    assert [[(i, p) for i, p, _ in b] for b in before] == [
        [(guest.id, GuestPower.RUNNING)],
        [(moving.id, GuestPower.INCOMING)],
    ]
    for host, listed in zip(hosts, before, strict=True):
        await host.restart()
        assert sorted((g.id, g.power, g.pid) for g in await host.driver.list()) == listed
    assert (await pair.source.spawn(guest)).pid == before[0][0][2]  # found, not restarted
    with pytest.raises(DriverError, match="is an incoming migration target on this host"):
        await pair.dest.finish_source(moving.id)  # still known as a target, not removed
    await pair.dest.abort_migration(moving.id, source=False)
    assert await pair.dest.get(moving.id) is None


# -- disk guests ---------------------------------------------------------------------------------


async def test_shared_storage_the_disk_moves_with_the_guest(driver_pair: DriverPair) -> None:
    pair, spec = driver_pair, driver_pair.spec(disk=True)
    await pair.source.spawn(spec)
    disk = pair.source_host.store.path(spec.id)
    assert disk.is_file() and pair.dest_host.store.path(spec.id) == disk
    await pair.dest.prepare_incoming(spec, pair.port, FAST)
    await pair.source.migrate(spec.id, pair.channel, FAST)
    await pair.complete(spec.id)
    await pair.dest.finish_destination(spec.id)
    await pair.source.finish_source(spec.id)
    assert disk.is_file()
    for driver in (pair.source, pair.dest):
        inventory = await driver.disks()
        assert inventory is not None and (inventory.kind, inventory.instance_ids) == (
            "shared",
            [spec.id],
        )
    await pair.dest.destroy(spec.id)
    assert not disk.exists()


async def test_local_storage_refuses_a_disk_guest_as_target(make_pair: PairFactory) -> None:
    pair = await make_pair("local")
    spec = pair.spec(disk=True)
    await pair.source.spawn(spec)
    with pytest.raises(DriverError, match="another host's local storage"):
        await pair.dest.prepare_incoming(spec, pair.port, FAST)
    assert await pair.dest.get(spec.id) is None
    assert not pair.dest_host.store.exists(spec.id)
    assert pair.processes(spec.id) == (1 if pair.kind == "qemu" else 0)


async def test_destroy_removes_the_disk(make_pair: PairFactory) -> None:
    pair = await make_pair("local")
    spec = pair.spec(disk=True)
    await pair.source.spawn(spec)
    again = await pair.source.spawn(spec)  # the same disk, not a fresh one
    assert again.power is GuestPower.RUNNING and pair.source_host.store.exists(spec.id)
    await pair.source.destroy(spec.id)
    assert not pair.source_host.store.exists(spec.id)
    assert await pair.source.get(spec.id) is None


# -- local disks copied with the guest -----------------------------------------------------------


async def _mirroring(pair: DriverPair, instance_id: str) -> None:
    async def started() -> bool:
        reading = await pair.source.migration_status(instance_id)
        return reading.status == "mirroring" and reading.disk_total_bytes > 0

    await pair.until("mirroring", started)


async def test_local_storage_the_disk_is_copied_with_the_guest(make_pair: PairFactory) -> None:
    pair = await make_pair("local")
    spec = pair.spec(disk=True)
    await pair.source.spawn(spec)
    source_disk = pair.source_host.store.path(spec.id)
    # Data the guest's disk holds, far from anything its filesystem uses (the qemu kind).
    await pair.write_disk(pair.source_host, spec.id, "write -P 0xa7 192M 4M")
    await pair.dest.prepare_incoming(spec, pair.port, FAST, pair.disk_copy)
    again = await pair.dest.prepare_incoming(spec, pair.port, FAST, pair.disk_copy)  # a retry
    assert again.power is GuestPower.INCOMING and pair.dest_host.store.exists(spec.id)
    await pair.source.migrate(spec.id, pair.disk_channel, FAST)  # the disk first

    async def in_sync() -> bool:
        reading = await pair.source.migration_status(spec.id)
        assert reading.status == "mirroring", reading  # no RAM before the disk is in sync
        return reading.disk_ready

    await pair.until("in sync", in_sync)
    synced = await pair.source.migration_status(spec.id)
    assert synced.disk_total_bytes >= (4 << 20 if pair.kind == "qemu" else 1), synced
    assert synced.disk_copied_bytes == synced.disk_total_bytes
    await pair.source.migrate(spec.id, pair.disk_channel, FAST)  # in sync: the RAM now
    done = await pair.complete(spec.id)
    assert done.transferred_bytes > 0 and done.disk_copied_bytes >= synced.disk_copied_bytes
    assert source_disk.is_file()  # until the destination runs the guest
    await pair.dest.finish_destination(spec.id)
    read = pair.read_disk(pair.dest_host, spec.id, "read -P 0xa7 192M 4M")
    assert pair.kind == "fake" or ("read 4194304/4194304" in read and "fail" not in read), read
    await pair.source.finish_source(spec.id)
    await pair.source.finish_source(spec.id)  # finished before
    assert not source_disk.exists() and pair.dest_host.store.exists(spec.id)
    source_disks, dest_disks = await pair.source.disks(), await pair.dest.disks()
    assert source_disks is not None and source_disks.instance_ids == []
    assert dest_disks is not None and dest_disks.instance_ids == [spec.id]
    running = await pair.dest.get(spec.id)
    assert running is not None and running.power is GuestPower.RUNNING
    assert pair.tunnels() == []  # the disk's TLS tunnels end with the copy


async def test_an_abort_mid_mirror_keeps_the_source_and_removes_the_copy(
    make_pair: PairFactory,
) -> None:
    pair = await make_pair("local")
    spec = pair.spec(disk=True)
    await pair.source.spawn(spec)
    await pair.write_disk(pair.source_host, spec.id, "write -P 0x5c 160M 16M")  # 16 s at SLOW
    await pair.dest.prepare_incoming(spec, pair.port, SLOW, pair.disk_copy)
    await pair.source.migrate(spec.id, pair.disk_channel, SLOW)
    await _mirroring(pair, spec.id)
    await pair.source.migrate(spec.id, pair.disk_channel, SLOW)  # not in sync: nothing changes
    assert (await pair.source.migration_status(spec.id)).status == "mirroring"
    await pair.source.abort_migration(spec.id, source=True)
    await pair.source.abort_migration(spec.id, source=True)  # again: it just runs on
    after = await pair.source.migration_status(spec.id)
    assert after.status in ("none", "cancelled") and not after.disk_ready, after
    guest = await pair.source.get(spec.id)
    assert guest is not None and guest.power is GuestPower.RUNNING
    await pair.dest.abort_migration(spec.id, source=False)
    assert await pair.dest.get(spec.id) is None
    assert not pair.dest_host.store.exists(spec.id)  # the partial copy is gone
    assert pair.source_host.store.exists(spec.id)  # the guest's own disk is not
    assert pair.tunnels() == []  # both ends of the disk's tunnel are gone
    # A new attempt starts from scratch and completes.
    await pair.dest.prepare_incoming(spec, pair.port, FAST, pair.disk_copy)
    await pair.source.migrate(spec.id, pair.disk_channel, FAST)
    await _mirroring(pair, spec.id)


async def test_a_disk_copy_goes_only_to_local_storage(driver_pair: DriverPair) -> None:
    pair, spec = driver_pair, driver_pair.spec(disk=True)
    await pair.source.spawn(spec)
    with pytest.raises(DriverError, match="local disks move only to local storage"):
        await pair.dest.prepare_incoming(spec, pair.port, FAST, pair.disk_copy)
    diskless = pair.spec()
    with pytest.raises(DriverError, match="has no disk to copy"):
        await pair.dest.prepare_incoming(diskless, pair.port, FAST, pair.disk_copy)
    assert await pair.dest.get(diskless.id) is None


async def test_a_mirror_to_a_destination_behind_a_dead_link_is_aborted_promptly(
    make_pair: PairFactory,
) -> None:
    """The link drops packets (TCP would wait for minutes): the abort still ends the copy, in
    seconds, and the source runs on with its disk."""
    pair = await make_pair("local")
    spec = pair.spec(disk=True)
    await pair.source.spawn(spec)
    await pair.write_disk(pair.source_host, spec.id, "write -P 0x3d 160M 16M")
    await pair.dest.prepare_incoming(spec, pair.port, SLOW, pair.disk_copy)
    await pair.source.migrate(spec.id, pair.disk_channel, SLOW)
    await _mirroring(pair, spec.id)
    pair.set_link(up=False)
    try:
        started = time.monotonic()
        await pair.source.abort_migration(spec.id, source=True)
        took = time.monotonic() - started
        after = await pair.source.migration_status(spec.id)
        assert after.status in ("none", "cancelled") and not after.disk_ready, after
        guest = await pair.source.get(spec.id)
        assert guest is not None and guest.power is GuestPower.RUNNING
        assert took < 20, f"the abort took {took:.1f} s"
    finally:
        pair.set_link(up=True)
    await pair.dest.abort_migration(spec.id, source=False)
    assert not pair.dest_host.store.exists(spec.id) and pair.source_host.store.exists(spec.id)
    assert pair.tunnels() == []
