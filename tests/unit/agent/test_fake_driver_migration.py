"""The fake driver's side of the migration handshake answers like the QEMU driver: a restarted
agent still knows its outgoing migration, and the calls refuse what would put a guest in two
places or none."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ferry.agent.drivers.base import (
    DriverError,
    GuestPower,
    GuestSpec,
    HostFacts,
    MigrationChannel,
    MigrationParams,
)
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.drivers.fake_migration import MIB

FACTS = HostFacts(4, 1024, 50, "qemu64", "7.2", "pc-q35-7.2")
SPEC = GuestSpec("00000000-0000-0000-0000-000000000001", "vm1", 1, 128)
CHANNEL = MigrationChannel("127.0.0.1", 49152, "127.0.0.1")


def params(mib_s: int) -> MigrationParams:
    return MigrationParams(mib_s * MIB)


async def _power(driver: FakeDriver) -> GuestPower | None:
    guest = await driver.get(SPEC.id)
    return guest.power if guest else None


async def test_a_restarted_agent_finds_its_outgoing_migration(tmp_path: Path) -> None:
    state = tmp_path / "fake-guests.json"
    source = FakeDriver(FACTS, state)
    await source.spawn(SPEC)
    await source.migrate(SPEC.id, CHANNEL, params(640))  # 128 MiB: 0.2 s
    restarted = FakeDriver(FACTS, state)
    assert (await restarted.migration_status(SPEC.id)).status in ("active", "device")
    await asyncio.sleep(0.3)
    assert (await FakeDriver(FACTS, state).migration_status(SPEC.id)).status == "completed"
    assert await _power(FakeDriver(FACTS, state)) is GuestPower.PAUSED


async def test_a_handed_over_source_is_listed_paused_and_cannot_be_resumed() -> None:
    source = FakeDriver(FACTS)
    await source.spawn(SPEC)
    await source.migrate(SPEC.id, CHANNEL, params(12800))
    await asyncio.sleep(0.05)
    assert [g.power for g in await source.list()] == [GuestPower.PAUSED]
    with pytest.raises(DriverError, match="completed: the guest runs on the destination"):
        await source.abort_migration(SPEC.id, source=True)
    await source.finish_source(SPEC.id)
    await source.finish_source(SPEC.id)  # twice: gone already
    assert await source.list() == []
    with pytest.raises(DriverError, match="does not run on this host"):
        await source.migration_status(SPEC.id)


async def test_a_running_source_is_not_removed_and_an_abort_keeps_it() -> None:
    source = FakeDriver(FACTS)
    await source.spawn(SPEC)
    await source.migrate(SPEC.id, CHANNEL, params(1))
    with pytest.raises(DriverError, match="running here, not handed over"):
        await source.finish_source(SPEC.id)
    await source.abort_migration(SPEC.id, source=True)
    assert (await source.migration_status(SPEC.id)).status == "cancelled"
    assert await _power(source) is GuestPower.RUNNING
    await source.destroy(SPEC.id)
    with pytest.raises(DriverError, match="does not run on this host"):
        await source.abort_migration(SPEC.id, source=True)


async def test_destination_finishes_once_and_refuses_to_abort_its_own_guest() -> None:
    dest = FakeDriver(FACTS)
    with pytest.raises(DriverError, match="no incoming migration"):
        await dest.finish_destination(SPEC.id)
    await dest.prepare_incoming(SPEC, 49152, params(100))
    assert await _power(dest) is GuestPower.INCOMING
    assert (await dest.finish_destination(SPEC.id)).power is GuestPower.RUNNING
    assert (await dest.finish_destination(SPEC.id)).power is GuestPower.RUNNING  # again
    with pytest.raises(DriverError, match="runs on this host as a guest, not as a target"):
        await dest.abort_migration(SPEC.id, source=False)
    await dest.destroy(SPEC.id)
    await dest.abort_migration(SPEC.id, source=False)  # nothing there: fine


async def test_an_incoming_target_is_removed_by_an_abort() -> None:
    dest = FakeDriver(FACTS)
    await dest.prepare_incoming(SPEC, 49152, params(100))
    await dest.abort_migration(SPEC.id, source=False)
    assert await dest.list() == []
