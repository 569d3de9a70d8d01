"""The fake driver's fault hooks answer as a real host would after the same fault: a dead QEMU
is listed stopped and refuses what a dead process cannot do, a lost peer fails the stream (the
source keeps running) or ends the incoming target, and a cut link stalls streams without failing
them. Then the hooks on the agent API, served for fake hosts only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from unittest.mock import Mock

import httpx
import pytest

from ferry.agent.drivers.base import (
    Driver,
    DriverError,
    GuestPower,
    GuestSpec,
    HostFacts,
    MigrationChannel,
    MigrationParams,
)
from ferry.agent.drivers.fake import ARRIVED, WAITING, Crash, FakeDriver
from ferry.agent.drivers.fake_migration import MIB
from ferry.agent.server import create_agent_app
from ferry.orchestrator.migration.judge import ARRIVED_DETAIL

FACTS = HostFacts(4, 1024, 50, "qemu64", "7.2", "pc-q35-7.2")
SPEC = GuestSpec("00000000-0000-0000-0000-000000000001", "vm1", 1, 128)
CHANNEL = MigrationChannel("127.0.0.1", 49152, "127.0.0.1")
SLOW = MigrationParams(1 * MIB)  # 128 s for 128 MiB: still streaming during a test
FAST = MigrationParams(12800 * MIB)  # 10 ms


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _guest(driver: FakeDriver) -> tuple[GuestPower, str] | None:
    guest = await driver.get(SPEC.id)
    return (guest.power, guest.detail) if guest else None


async def test_a_crashed_guest_is_listed_stopped_and_can_be_removed_or_started() -> None:
    driver = FakeDriver(FACTS)
    await driver.spawn(SPEC)
    assert driver.crash(SPEC.id) == Crash(target=False, stream="none")
    assert await _guest(driver) == (GuestPower.STOPPED, "no QEMU process")
    with pytest.raises(DriverError, match="does not run on this host"):
        await driver.migration_status(SPEC.id)
    with pytest.raises(DriverError, match="does not run on this host"):
        await driver.abort_migration(SPEC.id, source=True)
    assert (await driver.spawn(SPEC)).power is GuestPower.RUNNING  # started again
    driver.crash(SPEC.id)
    await driver.finish_source(SPEC.id)  # a dead source is removed, as QEMU's run dir is
    assert await driver.list() == []
    with pytest.raises(DriverError, match="not on this host"):
        driver.crash(SPEC.id)


async def test_a_source_that_dies_mid_stream_takes_its_stream_with_it() -> None:
    driver = FakeDriver(FACTS)
    await driver.spawn(SPEC)
    await driver.migrate(SPEC.id, CHANNEL, SLOW)
    assert driver.crash(SPEC.id) == Crash(target=False, stream="active")
    with pytest.raises(DriverError, match="does not run on this host"):
        await driver.migration_status(SPEC.id)


async def test_a_dead_incoming_target_is_aborted_or_replaced_never_finished() -> None:
    dest = FakeDriver(FACTS)
    await dest.prepare_incoming(SPEC, 49152, SLOW)
    assert dest.crash(SPEC.id) == Crash(target=True, stream="none")
    assert await _guest(dest) == (GuestPower.STOPPED, "the incoming QEMU exited")
    with pytest.raises(DriverError, match="exited: migration failed"):
        await dest.finish_destination(SPEC.id)
    assert (await dest.prepare_incoming(SPEC, 49153, SLOW)).power is GuestPower.INCOMING
    dest.crash(SPEC.id)
    await dest.abort_migration(SPEC.id, source=False)
    assert await dest.list() == []


async def test_a_guest_that_arrived_and_died_is_not_a_target_any_more() -> None:
    dest = FakeDriver(FACTS)
    await dest.prepare_incoming(SPEC, 49152, SLOW)
    await dest.finish_destination(SPEC.id)
    assert dest.crash(SPEC.id) == Crash(target=False, stream="none")
    with pytest.raises(DriverError, match="runs on this host as a guest, not as a target"):
        await dest.abort_migration(SPEC.id, source=False)


async def test_a_lost_peer_fails_the_stream_and_the_source_keeps_running() -> None:
    source = FakeDriver(FACTS)
    await source.spawn(SPEC)
    await source.migrate(SPEC.id, CHANNEL, SLOW)
    source.peer_lost(SPEC.id)
    progress = await source.migration_status(SPEC.id)
    assert progress.status == "failed" and "Connection reset by peer" in (progress.error or "")
    assert await _guest(source) == (GuestPower.RUNNING, "")
    await source.abort_migration(SPEC.id, source=True)  # the controller's unwind: fine
    assert await _guest(source) == (GuestPower.RUNNING, "")


async def test_a_peer_lost_before_the_stream_refuses_the_connection_once() -> None:
    source = FakeDriver(FACTS)
    await source.spawn(SPEC)
    source.peer_lost(SPEC.id)
    await source.migrate(SPEC.id, CHANNEL, SLOW)
    progress = await source.migration_status(SPEC.id)
    assert (progress.status, progress.error) == ("failed", "Failed to connect to 127.0.0.1:49152")
    await source.migrate(SPEC.id, CHANNEL, SLOW)  # the next attempt goes to a live peer
    assert (await source.migration_status(SPEC.id)).status == "active"
    source.peer_lost(SPEC.id)
    await source.abort_migration(SPEC.id, source=True)  # an abort ends that attempt too
    source.peer_lost(SPEC.id)
    await source.abort_migration(SPEC.id, source=True)
    await source.migrate(SPEC.id, CHANNEL, SLOW)
    assert (await source.migration_status(SPEC.id)).status == "active"


async def test_a_lost_peer_ends_a_waiting_target_but_not_a_handed_over_source() -> None:
    dest = FakeDriver(FACTS)
    await dest.prepare_incoming(SPEC, 49152, SLOW)
    assert dest.peer_lost(SPEC.id) == "none"
    assert await _guest(dest) == (GuestPower.STOPPED, "the incoming QEMU exited")
    source = FakeDriver(FACTS)
    await source.spawn(SPEC)
    await source.migrate(SPEC.id, CHANNEL, FAST)
    await asyncio.sleep(0.05)
    assert source.peer_lost(SPEC.id) == "completed"
    assert (await source.migration_status(SPEC.id)).status == "completed"
    assert await _guest(source) == (GuestPower.PAUSED, "migrated away")


async def test_a_target_that_received_the_guest_says_so_like_the_qemu_driver() -> None:
    dest = FakeDriver(FACTS)
    await dest.prepare_incoming(SPEC, 49152, SLOW)
    assert await _guest(dest) == (GuestPower.INCOMING, WAITING)
    dest.arrive(SPEC.id)
    assert await _guest(dest) == (GuestPower.INCOMING, ARRIVED)
    assert ARRIVED == ARRIVED_DETAIL  # what the controller's judge reads
    dest.peer_lost(SPEC.id)  # it has the guest whole: losing the source changes nothing
    assert await _guest(dest) == (GuestPower.INCOMING, ARRIVED)
    assert (await dest.finish_destination(SPEC.id)).power is GuestPower.RUNNING
    dest.arrive(SPEC.id)  # not a target any more: nothing to do
    assert await _guest(dest) == (GuestPower.RUNNING, "")


async def test_a_cut_link_stalls_streams_which_go_on_once_it_is_back(tmp_path: Path) -> None:
    state = tmp_path / "fake-guests.json"
    source = FakeDriver(FACTS, state)
    await source.spawn(SPEC)
    await source.migrate(SPEC.id, CHANNEL, MigrationParams(64 * MIB))  # 2 s
    await asyncio.sleep(0.2)
    source.set_link(up=False)
    frozen = (await source.migration_status(SPEC.id)).transferred_bytes
    await asyncio.sleep(0.3)
    restarted = FakeDriver(FACTS, state)  # the cut survives an agent restart
    assert not restarted.link_up
    assert (await restarted.migration_status(SPEC.id)).transferred_bytes == frozen
    assert (await restarted.migration_status(SPEC.id)).status == "active"
    restarted.set_link(up=True)
    resumed = (await restarted.migration_status(SPEC.id)).transferred_bytes
    assert frozen <= resumed < frozen + 32 * MIB  # where it stopped, not 0.3 s further
    await asyncio.sleep(0.1)
    assert (await restarted.migration_status(SPEC.id)).transferred_bytes > resumed


async def test_a_stream_started_while_the_link_is_cut_moves_nothing() -> None:
    source = FakeDriver(FACTS)
    await source.spawn(SPEC)
    source.set_link(up=False)
    await source.migrate(SPEC.id, CHANNEL, FAST)
    await asyncio.sleep(0.05)
    progress = await source.migration_status(SPEC.id)
    assert (progress.status, progress.transferred_bytes) == ("active", 0)
    source.set_link(up=True)
    await asyncio.sleep(0.05)
    assert (await source.migration_status(SPEC.id)).status == "completed"


async def test_the_state_file_is_replaced_whole_and_the_old_format_still_loads(
    tmp_path: Path,
) -> None:
    state = tmp_path / "fake-guests.json"
    driver = FakeDriver(FACTS, state)
    await driver.spawn(SPEC)
    assert names(tmp_path) == ["fake-guests.json"]  # no partial file left behind
    saved = json.loads(state.read_text())
    state.write_text(json.dumps(saved["guests"]))  # a list: the format before link state
    assert [g.name for g in await FakeDriver(FACTS, state).list()] == ["vm1"]


# -- on the agent API -------------------------------------------------------------------------


@pytest.fixture
async def agent() -> AsyncIterator[tuple[httpx.AsyncClient, FakeDriver]]:
    driver = FakeDriver(FACTS)
    transport = httpx.ASGITransport(app=create_agent_app(driver, "host1"))
    async with httpx.AsyncClient(transport=transport, base_url="https://agent.test") as client:
        yield client, driver


async def test_the_agent_api_serves_the_hooks_of_a_fake_host(
    agent: tuple[httpx.AsyncClient, FakeDriver],
) -> None:
    client, driver = agent
    await driver.spawn(SPEC)
    crashed = await client.post(f"/v1/fake/guests/{SPEC.id}/crash")
    assert (crashed.status_code, crashed.json()) == (200, {"target": False, "stream": "none"})
    missing = await client.post("/v1/fake/guests/nope/crash")
    assert missing.status_code == 409 and missing.json()["error"] == "driver"
    lost = await client.post(f"/v1/fake/guests/{SPEC.id}/peer-lost")
    assert (lost.status_code, lost.json()) == (200, {"stream": "none"})
    assert (await client.post(f"/v1/fake/guests/{SPEC.id}/arrive")).status_code == 204
    cut = await client.put("/v1/fake/link", json={"up": False})
    assert (cut.status_code, cut.json(), driver.link_up) == (200, {"up": False}, False)
    assert (await client.put("/v1/fake/link", json={"up": True})).json() == {"up": True}


async def test_other_hosts_do_not_serve_the_hooks() -> None:
    other = Mock(spec=Driver)  # any driver but the fake one
    transport = httpx.ASGITransport(app=create_agent_app(other, "host1"))
    async with httpx.AsyncClient(transport=transport, base_url="https://agent.test") as client:
        assert (await client.put("/v1/fake/link", json={"up": False})).status_code == 404
        assert (await client.post(f"/v1/fake/guests/{SPEC.id}/crash")).status_code == 404
