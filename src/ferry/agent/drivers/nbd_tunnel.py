"""A local disk's NBD connection inside TLS from its first byte.

QEMU's NBD TLS is STARTTLS-shaped, as the NBD protocol specifies it: the server's greeting
("NBDMAGIC", "IHAVEOPT", its flags) and the client's STARTTLS option cross the link in clear
before the handshake. So the connection between the hosts is a TLS tunnel (socat, OpenSSL:
TLS 1.2 or later, mutual, the cluster CA, the peer's certificate name checked: the destination
admits the migration's source host only, the source accepts only the destination it means),
and QEMU's own NBD TLS, with its exact authz, runs inside it unchanged. Each QEMU talks NBD
over a Unix socket in the guest's run directory:

- destination: QEMU's NBD server on `<run>/nbd.sock`; the tunnel listens on the disk port of
  the migration address and forwards each connection to it;
- source: the tunnel listens on `<run>/nbd-peer.sock` and forwards each connection to the
  destination's disk port; the mirror's NBD client connects to it.

A tunnel is a detached process (its own session) with a pid file in the run directory, so it
outlives an agent restart as the QEMU it serves does; it is stopped (its whole process group:
socat forks a child per connection) when the copy ends, and with the run directory it lives in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from ferry.agent.drivers.base import DriverError

EXPORT_SOCKET = "nbd.sock"  # destination: QEMU's NBD server
PEER_SOCKET = "nbd-peer.sock"  # source: the tunnel's local end, the mirror's NBD client's server
LISTENER_PID = "nbd-tunnel-in.pid"
CONNECTOR_PID = "nbd-tunnel-out.pid"
READY_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
POLL = 0.02
TCP_LISTEN = "0A"  # /proc/net/tcp's state of a listening socket


def socat() -> str:
    path = shutil.which("socat")
    if path is None:
        raise DriverError("socat is not installed: it carries local disk copies over TLS")
    return path


def _tls(creds: Path, role: str, peer: str) -> str:
    """socat's OpenSSL options: our `role` (server, client) certificate, the cluster CA, the
    peer's certificate checked and its name required."""
    return (
        f"cert={creds / f'{role}-cert.pem'},key={creds / f'{role}-key.pem'},"
        f"cafile={creds / 'ca-cert.pem'},verify=1,commonname={peer},"
        "openssl-min-proto-version=TLS1.2"
    )


def listener_argv(run: Path, creds: Path, address: str, port: int, source_host: str) -> list[str]:
    tls = _tls(creds, "server", source_host)
    listen = f"OPENSSL-LISTEN:{port},bind={address},reuseaddr,fork,{tls}"
    return [socat(), "-d", listen, f"UNIX-CONNECT:{run / EXPORT_SOCKET}"]


def connector_argv(run: Path, creds: Path, address: str, port: int, dest_name: str) -> list[str]:
    local = f"UNIX-LISTEN:{run / PEER_SOCKET},unlink-early,fork,mode=600"
    return [socat(), "-d", local, f"OPENSSL:{address}:{port},{_tls(creds, 'client', dest_name)}"]


async def start_listener(run: Path, creds: Path, address: str, port: int, source: str) -> None:
    """The destination's end, listening once this returns. Idempotent."""
    if _alive(run, LISTENER_PID):
        return
    await _spawn(run, LISTENER_PID, listener_argv(run, creds, address, port, source))
    pid = _pid(run, LISTENER_PID) or 0
    await _until(run, LISTENER_PID, lambda: _listening(port, pid), f"the disk port {port}")


async def start_connector(run: Path, creds: Path, address: str, port: int, dest: str) -> Path:
    """The source's end; the Unix socket the mirror connects to. Idempotent."""
    socket = run / PEER_SOCKET
    if not _alive(run, CONNECTOR_PID):
        await _spawn(run, CONNECTOR_PID, connector_argv(run, creds, address, port, dest))
    await _until(run, CONNECTOR_PID, socket.is_socket, str(socket))
    return socket


async def stop(run: Path, pid_file: str) -> None:
    """End the tunnel and every connection it forked. Nothing running is fine."""
    pid = _pid(run, pid_file)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        for _ in range(round(STOP_TIMEOUT / POLL)):
            if not _owned(pid, run):
                break
            await asyncio.sleep(POLL)
        if _owned(pid, run):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _children.pop(pid, None)
    (run / pid_file).unlink(missing_ok=True)


async def stop_all(run: Path) -> None:
    for pid_file in (LISTENER_PID, CONNECTOR_PID):
        await stop(run, pid_file)


def _log(pid_file: str) -> str:
    """Each end's own log, begun afresh by each start: its last line is that start's."""
    return pid_file.removesuffix(".pid") + ".log"


async def _spawn(run: Path, pid_file: str, argv: list[str]) -> None:
    with (run / _log(pid_file)).open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own group: stopped whole, never with the agent
        )
    (run / pid_file).write_text(f"{proc.pid}\n")
    _children[proc.pid] = proc


async def _until(run: Path, pid_file: str, ready: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while not ready():
        if not _alive(run, pid_file):
            await asyncio.sleep(0.1)  # its exit status reaped
            raise DriverError(
                f"the disk's TLS tunnel exited ({_exit_of(run, pid_file)}): "
                f"{_last_line(run, pid_file)}"
            )
        if loop.time() > deadline:
            await stop(run, pid_file)
            raise DriverError(
                f"the disk's TLS tunnel is not ready ({what}) after {READY_TIMEOUT:g} s"
            )
        await asyncio.sleep(POLL)


# The tunnels this agent process started, for their exit status (after a restart: unknown).
_children: dict[int, asyncio.subprocess.Process] = {}


def _exit_of(run: Path, pid_file: str) -> str:
    proc = _children.get(_pid(run, pid_file) or 0)
    if proc is None or proc.returncode is None:
        return "status unknown"
    code = proc.returncode
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def _pid(run: Path, pid_file: str) -> int | None:
    try:
        return int((run / pid_file).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _owned(pid: int, run: Path) -> bool:
    """`pid` is a live tunnel of this run directory (not a pid reused since).

    Right after its exec a process's arguments read empty for a moment (the kernel is still
    setting them up; its name is already there): it is then taken by its name, else a tunnel
    just started would pass for one that exited (the cause of intermittent "the disk's TLS
    tunnel exited" refusals)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        comm, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
        state = rest.split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return False
    if state == "Z":
        return False
    if not cmdline:
        return comm.split("(", 1)[-1] == "socat"
    return b"socat" in cmdline and str(run).encode() in cmdline


def _alive(run: Path, pid_file: str) -> bool:
    pid = _pid(run, pid_file)
    return pid is not None and _owned(pid, run)


def _listening(port: int, pid: int) -> bool:
    """Process `pid` itself listens on TCP `port` (IPv4) in this network namespace: a socket
    of someone else's on the port does not count (the tunnel then fails to bind, and says so)."""
    try:
        lines = Path("/proc/self/net/tcp").read_text().splitlines()[1:]
        fds = [str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return False
    wanted = f"{port:04X}"
    inodes = {
        f[9]
        for line in lines
        if (f := line.split())[1].rsplit(":", 1)[1] == wanted and f[3] == TCP_LISTEN
    }
    return any(fd in {f"socket:[{inode}]" for inode in inodes} for fd in fds)


def _last_line(run: Path, pid_file: str) -> str:
    try:
        lines = (run / _log(pid_file)).read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log"
    return lines[-1] if lines else "no output"
