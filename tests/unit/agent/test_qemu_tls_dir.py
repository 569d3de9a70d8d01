"""The QEMU driver's migration credentials directory, built once even when several migrations
are prepared at the same moment (regression: concurrent preparations rebuilt it under each
other and one failed with "cannot lay out the migration TLS credentials"), and never absent
when a stream would open."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ferry.agent.drivers.base import DriverError, GuestSpec, MigrationChannel, MigrationParams
from ferry.agent.drivers.qemu import QemuDriver
from ferry.agent.drivers.qemu_argv import QemuConfig, TlsFiles
from ferry.pki.ca import init_ca, issue

FILES = ["ca-cert.pem", "client-cert.pem", "client-key.pem", "server-cert.pem", "server-key.pem"]


async def test_concurrent_preparations_share_one_credentials_directory(tmp_path: Path) -> None:
    init_ca(tmp_path / "pki")
    host = issue(tmp_path / "pki", "host1", ips=["198.18.0.11"])
    config = QemuConfig(
        run_dir=tmp_path / "run",
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd",
        tls=TlsFiles(host.ca, host.cert, host.key),
    )
    driver = QemuDriver(config)
    dirs = await asyncio.gather(*(driver._tls() for _ in range(16)))
    assert set(dirs) == {tmp_path / "run" / "tls"}
    assert sorted(p.name for p in dirs[0].iterdir()) == FILES
    assert (dirs[0] / "server-key.pem").stat().st_mode & 0o777 == 0o600


async def test_without_credentials_no_stream_is_ever_opened(tmp_path: Path) -> None:
    """There is no plaintext migration: a host without TLS files refuses both ends before it
    starts any QEMU or sends any QMP command."""
    config = QemuConfig(run_dir=tmp_path / "run", kernel=tmp_path / "k", initrd=tmp_path / "i")
    driver = QemuDriver(config)
    spec = GuestSpec("0e3c9a52-0000-4000-8000-000000000001", "vm1", 1, 128)
    params = MigrationParams(max_bandwidth_bytes=2**30)
    with pytest.raises(DriverError, match="no TLS credentials"):
        await driver.prepare_incoming(spec, 61000, params)
    with pytest.raises(DriverError, match="no TLS credentials"):
        await driver.migrate(spec.id, MigrationChannel("198.18.0.12", 61000, "h2"), params)
    assert not (tmp_path / "run" / spec.id).exists()  # no QEMU was started for it
