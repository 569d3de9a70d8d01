"""The disk copy's TLS tunnel with the real socat, on loopback: bytes written into the source's
Unix socket come out of the destination's, the link between them is TLS from its first byte, a
host other than the migration's source is refused, the destination checks the name it expects,
and stopping a tunnel ends it and every connection it forked."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ferry.agent.drivers import nbd_tunnel as tunnel
from ferry.agent.drivers.base import DriverError
from ferry.agent.drivers.qemu_argv import TlsFiles
from ferry.agent.drivers.qemu_stream import build_creds_dir
from ferry.faults.cluster import free_port
from ferry.pki.ca import init_ca, issue

pytestmark = pytest.mark.skipif(
    shutil.which("socat") is None and os.environ.get("CI") != "true",
    reason="socat is not installed (scripts/setup.sh installs it)",
)

NBD_GREETING = b"NBDMAGIC" + b"IHAVEOPT"


def creds(pki: Path, host: str, run: Path) -> Path:
    issued = issue(pki, host, ips=["127.0.0.1"])
    return build_creds_dir(TlsFiles(issued.ca, issued.cert, issued.key), run / "tls")


async def serve_export(path: Path, received: list[bytes]) -> asyncio.Server:
    """What QEMU's NBD server would be: answers the greeting, keeps what it is sent."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(NBD_GREETING)
        await writer.drain()
        received.append(await reader.read(1024))
        writer.close()

    return await asyncio.start_unix_server(handle, path=str(path))


async def relay(listen: int, upstream: int, seen: list[bytes]) -> asyncio.Server:
    """A wiretap between the two hosts: forwards TCP and keeps every byte that crossed it."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.append(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", listen)


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[tuple[Path, Path, Path]]:
    init_ca(tmp_path / "pki")
    dest_run, source_run = tmp_path / "h2", tmp_path / "h1"
    dest_run.mkdir()
    source_run.mkdir()
    yield tmp_path / "pki", dest_run, source_run
    for run in (dest_run, source_run):
        await tunnel.stop_all(run)


async def talk(sock: Path) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    greeting = await asyncio.wait_for(reader.read(len(NBD_GREETING)), 10)
    writer.write(b"NBD option STARTTLS, then blocks")
    await writer.drain()
    await asyncio.wait_for(reader.read(1), 10)  # the export closes after reading
    writer.close()
    return greeting


async def test_the_disk_link_is_tls_from_the_first_byte(hosts: tuple[Path, Path, Path]) -> None:
    pki, dest_run, source_run = hosts
    received: list[bytes] = []
    export = await serve_export(dest_run / tunnel.EXPORT_SOCKET, received)
    port, tap = free_port(), free_port()
    wire: list[bytes] = []
    tapped = await relay(tap, port, wire)
    dest_creds, source_creds = creds(pki, "host2", dest_run), creds(pki, "host1", source_run)
    await tunnel.start_listener(dest_run, dest_creds, "127.0.0.1", port, "host1")
    sock = await tunnel.start_connector(source_run, source_creds, "127.0.0.1", tap, "host2")
    try:
        assert await talk(sock) == NBD_GREETING
        assert received == [b"NBD option STARTTLS, then blocks"]
        crossed = b"".join(wire)
        assert crossed[:1] == b"\x16"  # a TLS handshake record first, both ways
        assert b"NBDMAGIC" not in crossed and b"STARTTLS" not in crossed
    finally:
        tapped.close()
        export.close()


async def test_only_the_migrations_source_is_admitted(hosts: tuple[Path, Path, Path]) -> None:
    pki, dest_run, source_run = hosts
    received: list[bytes] = []
    export = await serve_export(dest_run / tunnel.EXPORT_SOCKET, received)
    port = free_port()
    await tunnel.start_listener(dest_run, creds(pki, "host2", dest_run), "127.0.0.1", port, "host1")
    intruder = creds(pki, "host3", source_run)  # a cluster host, not this migration's source
    sock = await tunnel.start_connector(source_run, intruder, "127.0.0.1", port, "host2")
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        assert await asyncio.wait_for(reader.read(16), 10) == b""  # closed, nothing served
        writer.close()
        assert received == []
    finally:
        export.close()


async def test_the_source_checks_the_destinations_name(hosts: tuple[Path, Path, Path]) -> None:
    pki, dest_run, source_run = hosts
    received: list[bytes] = []
    export = await serve_export(dest_run / tunnel.EXPORT_SOCKET, received)
    port = free_port()
    # host3 answers on the port the source was told is host2's
    await tunnel.start_listener(dest_run, creds(pki, "host3", dest_run), "127.0.0.1", port, "host1")
    source = creds(pki, "host1", source_run)
    sock = await tunnel.start_connector(source_run, source, "127.0.0.1", port, "host2")
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        assert await asyncio.wait_for(reader.read(16), 10) == b""
        writer.close()
        # The impostor's end may have connected to its export before the source hung up on
        # it; nothing was sent over it.
        assert all(data == b"" for data in received), received
    finally:
        export.close()


def group_alive(pgid: int) -> bool:
    """Some live process (not a zombie) of process group `pgid` is left."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


async def test_stopping_ends_the_tunnel_and_its_connections(
    hosts: tuple[Path, Path, Path],
) -> None:
    pki, dest_run, source_run = hosts
    export = await serve_export(dest_run / tunnel.EXPORT_SOCKET, [])
    port, own = free_port(), creds(pki, "host2", dest_run)
    await tunnel.start_listener(dest_run, own, "127.0.0.1", port, "host1")
    first = (dest_run / tunnel.LISTENER_PID).read_text()
    await tunnel.start_listener(dest_run, own, "127.0.0.1", port, "host1")
    assert (dest_run / tunnel.LISTENER_PID).read_text() == first  # idempotent: one process
    source = creds(pki, "host1", source_run)
    sock = await tunnel.start_connector(source_run, source, "127.0.0.1", port, "host2")
    reader, writer = await asyncio.open_unix_connection(str(sock))  # forks on both ends
    assert await asyncio.wait_for(reader.read(len(NBD_GREETING)), 10) == NBD_GREETING
    ends = [int(first), int((source_run / tunnel.CONNECTOR_PID).read_text())]
    for run in (dest_run, source_run):
        await tunnel.stop_all(run)
        assert not (run / tunnel.LISTENER_PID).exists()
        assert not (run / tunnel.CONNECTOR_PID).exists()
    assert not any([await asyncio.to_thread(group_alive, pid) for pid in ends])
    assert await asyncio.wait_for(reader.read(16), 10) == b""  # the connection went with them
    writer.close()
    export.close()


async def test_a_tunnel_that_cannot_start_says_why_not_an_older_line(
    hosts: tuple[Path, Path, Path],
) -> None:
    """Regression: each end logged into one file, and a start that failed reported the last
    line of an earlier tunnel ("exiting on signal 15") instead of its own error."""
    pki, dest_run, _source = hosts
    port, own = free_port(), creds(pki, "host2", dest_run)
    await tunnel.start_listener(dest_run, own, "127.0.0.1", port, "host1")
    await tunnel.stop(dest_run, tunnel.LISTENER_PID)
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)  # port in use
    try:
        with pytest.raises(DriverError, match="Address already in use"):
            await tunnel.start_listener(dest_run, own, "127.0.0.1", port, "host1")
    finally:
        taken.close()


async def test_a_tunnel_just_started_is_not_taken_for_one_that_exited(
    hosts: tuple[Path, Path, Path],
) -> None:
    """Regression: right after its exec a process's arguments read empty for a moment, and the
    start took the new tunnel for an exited one ("the disk's TLS tunnel exited: no output", in
    about one start of 40, seen as failed migrations right after a drain)."""
    pki, _dest, source_run = hosts
    source = creds(pki, "host1", source_run)
    for _ in range(80):
        await tunnel.start_connector(source_run, source, "127.0.0.1", free_port(), "host2")
        await tunnel.stop(source_run, tunnel.CONNECTOR_PID)
