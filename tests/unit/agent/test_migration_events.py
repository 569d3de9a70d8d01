"""Migration events on the agent's side: what the QEMU driver's event watch makes of QEMU's
events, and what the fake driver announces of its simulated streams (real QEMU events are in
tests/lab/test_qemu_events.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from ferry.agent.drivers import qemu_events, qemu_migration
from ferry.agent.drivers.base import (
    GuestSpec,
    HostFacts,
    MigrationChannel,
    MigrationEvent,
    MigrationParams,
)
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.drivers.fake_migration import MIB
from ferry.agent.drivers.qemu import QemuDriver
from ferry.agent.drivers.qemu_argv import EVENTS_SOCK, QemuConfig
from ferry.agent.drivers.qemu_events import EventWatch

ID = "00000000-0000-0000-0000-000000000001"
FACTS = HostFacts(4, 1024, 50, "qemu64", "7.2", "pc-q35-7.2")
CHANNEL = MigrationChannel("127.0.0.1", 49152, "127.0.0.1")


def _watch(heard: list[MigrationEvent]) -> EventWatch:
    return EventWatch(ID, Path("/nonexistent/events.sock"), heard.append)


async def test_the_watch_keeps_status_and_passes_and_emits_migration_events() -> None:
    heard: list[MigrationEvent] = []
    watch = _watch(heard)
    watch.hear("MIGRATION", {"status": "setup"})
    watch.hear("MIGRATION", {"status": "active"})
    watch.hear("MIGRATION_PASS", {"pass": 1})
    watch.hear("MIGRATION_PASS", {"pass": 2})
    watch.hear("RTC_CHANGE", {"offset": 1})  # not a migration's: no event for the sink
    watch.hear("MIGRATION", {"status": "completed"})
    assert [(e.status, e.passes) for e in heard] == [
        ("setup", 0),
        ("active", 0),
        ("active", 1),
        ("active", 2),
        ("completed", 2),
    ]
    assert all(e.instance_id == ID for e in heard)
    assert (watch.status, watch.passes, watch.heard) == ("completed", 2, 6)
    watch.hear("MIGRATION", {"status": "setup"})  # the guest migrates again: passes restart
    assert (watch.status, watch.passes) == ("setup", 0)


async def test_any_event_wakes_a_waiter_and_none_lets_it_time_out() -> None:
    watch = _watch([])
    clock = asyncio.get_running_loop()
    seen = watch.changed.current()
    started = clock.time()
    await watch.changed.wait(seen, 0.05)  # nothing came: the fallback
    assert clock.time() - started >= 0.045
    seen = watch.changed.current()
    waiter = asyncio.create_task(watch.changed.wait(seen, 5.0))
    await asyncio.sleep(0.01)
    watch.hear("RESUME", {})  # an arriving guest starts: not a migration event, still news
    await asyncio.wait_for(waiter, 0.5)
    # Taken before an event that came before the wait: the wait returns at once.
    seen = watch.changed.current()
    watch.hear("STOP", {})
    await asyncio.wait_for(watch.changed.wait(seen, 5.0), 0.1)


async def test_a_sink_that_fails_does_not_break_the_driver(tmp_path: Path) -> None:
    def broken(_event: MigrationEvent) -> None:
        raise RuntimeError("listener bug")

    driver = FakeDriver(FACTS, tmp_path / "state.json")
    driver.event_sink = broken
    await driver.spawn(GuestSpec(ID, "vm1", 1, 64))
    await driver.migrate(ID, CHANNEL, MigrationParams(64 * MIB))
    assert (await driver.migration_status(ID)).status in ("active", "device", "completed")


async def _fake_source(tmp_path: Path, ram_mb: int) -> tuple[FakeDriver, list[MigrationEvent]]:
    heard: list[MigrationEvent] = []
    driver = FakeDriver(FACTS, tmp_path / "state.json")
    driver.event_sink = heard.append
    await driver.spawn(GuestSpec(ID, "vm1", 1, ram_mb))
    return driver, heard


async def test_the_fake_announces_a_stream_and_its_completion_when_the_model_says(
    tmp_path: Path,
) -> None:
    driver, heard = await _fake_source(tmp_path, ram_mb=16)
    await driver.migrate(ID, CHANNEL, MigrationParams(128 * MIB))  # 16 MiB: 125 ms
    assert [e.status for e in heard] == ["active"]
    assert (await driver.migration_status(ID)).status == "active"
    for _ in range(100):
        if len(heard) == 2:
            break
        await asyncio.sleep(0.01)
    assert [e.status for e in heard] == ["active", "completed"]
    # The event came when the model completed: a reading now agrees.
    assert (await driver.migration_status(ID)).status == "completed"


async def test_a_tune_moves_the_announced_completion(tmp_path: Path) -> None:
    driver, heard = await _fake_source(tmp_path, ram_mb=64)
    await driver.migrate(ID, CHANNEL, MigrationParams(8 * MIB))  # 8 s at this bandwidth
    await driver.tune_migration(ID, max_bandwidth_bytes=1024 * MIB)  # now about 60 ms
    for _ in range(100):
        if len(heard) == 2:
            break
        await asyncio.sleep(0.01)
    assert [e.status for e in heard] == ["active", "completed"]


async def test_a_cancelled_stream_announces_it_and_never_completes(tmp_path: Path) -> None:
    driver, heard = await _fake_source(tmp_path, ram_mb=16)
    await driver.migrate(ID, CHANNEL, MigrationParams(128 * MIB))
    await driver.abort_migration(ID, source=True)
    await asyncio.sleep(0.3)  # past the completion the model had planned
    assert [e.status for e in heard] == ["active", "cancelled"]
    assert (await driver.migration_status(ID)).status == "cancelled"


async def test_a_silent_event_monitor_is_not_asked_again_at_every_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event monitor that accepts but never greets (a wedged QEMU) costs one connect
    timeout, then the guest is polled without events until WATCH_RETRY has passed."""
    monkeypatch.setattr(qemu_events, "CONNECT_TIMEOUT", 0.2)
    short = Path(tempfile.mkdtemp(prefix="fe-"))  # a unix socket's path has 107 bytes at most
    driver = QemuDriver(QemuConfig(short, tmp_path / "k", tmp_path / "i"))
    rundir = short / ID
    rundir.mkdir(parents=True)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(rundir / EVENTS_SOCK))
    silent.listen(8)
    try:
        clock = asyncio.get_running_loop()
        started = clock.time()
        assert await driver._watch(ID) is None
        assert clock.time() - started >= 0.2  # waited for the greeting once
        started = clock.time()
        assert await driver._watch(ID) is None
        assert clock.time() - started < 0.1  # not again
        monkeypatch.setattr(qemu_migration, "WATCH_RETRY", 0.0)
        started = clock.time()
        assert await driver._watch(ID) is None
        assert clock.time() - started >= 0.2  # after WATCH_RETRY it is tried again
    finally:
        silent.close()
        await driver.close()
        shutil.rmtree(short)


class OneClientMonitor:
    """A QMP monitor that, like QEMU's, serves one client at a time (a second one waits,
    greeted only once the first is gone), and can send events to the client it serves."""

    def __init__(self) -> None:
        version = {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}
        self.greeting = {"QMP": {"version": version, "capabilities": []}}
        self.turn = asyncio.Lock()
        self.served = 0
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.turn:
            self.served += 1
            self.writer = writer
            writer.write(json.dumps(self.greeting).encode() + b"\r\n")
            decoder, pending = json.JSONDecoder(), ""
            while chunk := await reader.read(4096):  # a JSON stream, as QEMU parses it
                pending += chunk.decode()
                while pending.strip():
                    try:
                        request, end = decoder.raw_decode(pending.strip())
                    except json.JSONDecodeError:
                        break  # the rest of the message is still on its way
                    pending = pending.strip()[end:]
                    answer = {"return": {}, **({"id": request["id"]} if "id" in request else {})}
                    writer.write(json.dumps(answer).encode() + b"\r\n")
            self.writer = None
            writer.close()

    def event(self, name: str, data: dict[str, object]) -> None:
        assert self.writer is not None
        stamp = {"seconds": 0, "microseconds": 0}
        self.writer.write(json.dumps({"event": name, "data": data, "timestamp": stamp}).encode()
                          + b"\r\n")  # fmt: skip


async def test_concurrent_steps_share_one_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two migration steps asking for the guest's events at once get the same watch: the
    monitor takes one client, so a second connection would wait for a greeting that never
    comes (regression: the loser waited out the connect timeout and was taken for a monitor
    that does not answer)."""
    monkeypatch.setattr(qemu_events, "CONNECT_TIMEOUT", 0.5)
    short = Path(tempfile.mkdtemp(prefix="fe-"))
    heard: list[MigrationEvent] = []
    driver = QemuDriver(QemuConfig(short, tmp_path / "k", tmp_path / "i"))
    driver.event_sink = heard.append
    (short / ID).mkdir()
    monitor = OneClientMonitor()
    server = await asyncio.start_unix_server(monitor.serve, str(short / ID / EVENTS_SOCK))
    try:
        first, second = await asyncio.wait_for(
            asyncio.gather(driver._watch(ID), driver._watch(ID)), 0.4
        )
        assert first is not None and first is second and monitor.served == 1
        seen = first.changed.current()
        monitor.event("MIGRATION", {"status": "active"})
        await asyncio.wait_for(first.changed.wait(seen, 5), 1)
        assert heard == [MigrationEvent(ID, "active", 0)] and first.status == "active"
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
        shutil.rmtree(short)
