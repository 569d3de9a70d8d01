"""QEMU's migration stream in QMP: capabilities, TLS settings, progress readings, credentials.

The commands that start and read a guest's RAM stream, shared by the driver (qemu_migration.py)
and by tests that drive two QEMUs directly.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from ferry.agent.drivers.base import (
    DriverError,
    MigrationChannel,
    MigrationParams,
    MigrationProgress,
)
from ferry.agent.drivers.qemu_argv import (
    AUTHZ_ID,
    TLS_CLIENT_ID,
    TLS_SERVER_ID,
    TlsFiles,
    tls_creds_object,
)
from ferry.pki.store import (
    CERT_MODE,
    KEY_MODE,
    PkiError,
    check_pair,
    ensure_dir,
    read_cert,
    read_key,
    write_file,
)

QMP_TIMEOUT = 5.0
SETTLE_TIMEOUT = 30.0  # a cancel, a switchover, the destination's last device state
POLL = 0.05  # a guest without an event monitor
EVENT_FALLBACK = 0.5  # a guest with one, when no event comes
WATCH_RETRY = 30.0  # after an event monitor did not answer, seconds before trying it again
INCOMING_FILE = "incoming.json"
TLS_DIR = "tls"

SENDING = frozenset({"setup", "active", "pre-switchover", "wait-unplug", "device", "cancelling"})
CANCELLABLE = frozenset({"setup", "active", "pre-switchover", "wait-unplug"})
POSTCOPY = frozenset({"postcopy-active", "postcopy-paused", "postcopy-recover"})
ARRIVING = frozenset({"inmigrate", "finish-migrate", "restore-vm", "prelaunch"})
# QEMU's own self-announce timing (5 RARP rounds, 50..550 ms apart); 7.2's announce-self
# demands every field, although the schema documents them as optional.
ANNOUNCE = {"initial": 50, "max": 550, "rounds": 5, "step": 100}


def capabilities(
    params: MigrationParams, *, source: bool, disk: bool = False
) -> list[dict[str, Any]]:
    """Migration capabilities; postcopy-ram must match on both ends, auto-converge is the
    source's alone (it throttles the source's vCPUs). A source that mirrors a disk pauses
    before the switchover, so that the mirror completes before the destination may run the
    guest (qemu_mirror.py); the destination needs nothing for it."""
    caps = {"events": True, "return-path": True, "postcopy-ram": params.postcopy}
    if source:
        caps["auto-converge"] = params.auto_converge
        caps["pause-before-switchover"] = disk
    return [{"capability": name, "state": state} for name, state in caps.items()]


def tcp_uri(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"tcp:{host}:{port}"


def outgoing_status(info: Mapping[str, Any]) -> str:
    """The status of this QEMU's outgoing migration. query-migrate falls back to the incoming
    record when the guest never migrated out: a guest that arrived here says "completed"
    (without RAM counters) until it first migrates on."""
    status = str(info.get("status", "none"))
    return "none" if status == "completed" and "ram" not in info else status


def progress_from(info: Mapping[str, Any]) -> MigrationProgress:
    """query-migrate on the source, as a MigrationProgress."""
    status = outgoing_status(info)
    ram: Mapping[str, Any] = (info.get("ram") or {}) if status != "none" else {}
    done = status == "completed"
    return MigrationProgress(
        status=status,
        total_bytes=int(ram.get("total", 0)),
        transferred_bytes=int(ram.get("transferred", 0)),
        remaining_bytes=int(ram.get("remaining", 0)),
        dirty_rate_bytes=int(ram.get("dirty-pages-rate", 0)) * int(ram.get("page-size", 4096)),
        passes=int(ram.get("dirty-sync-count", 0)),
        throughput_mbps=float(ram.get("mbps", 0.0)),
        expected_downtime_ms=int(info.get("expected-downtime", 0)),
        downtime_ms=int(info["downtime"]) if done and "downtime" in info else None,
        total_time_ms=int(info["total-time"]) if done and "total-time" in info else None,
        error=str(info["error-desc"]) if "error-desc" in info else None,
    )


async def run(qmp: QMPClient, command: str, args: Mapping[str, object] | None = None) -> Any:
    """One QMP command; every failure becomes a DriverError naming the command."""
    try:
        return await asyncio.wait_for(qmp.execute(command, args), QMP_TIMEOUT)
    except (QMPError, OSError, EOFError, TimeoutError) as exc:
        raise DriverError(f"QMP {command} failed: {exc or type(exc).__name__}") from exc


def build_creds_dir(tls: TlsFiles, dest: Path) -> Path:
    """Lay out `dest` for tls-creds-x509 (the layout of ferry.pki.ca.qemu_creds_dir) from the
    host's own files: its one certificate serves as server and client. Rebuilt from scratch, so
    nothing else (a stray ca-crl.pem, dh-params.pem) is read by QEMU. Keys 0600, dir 0700."""
    try:
        cert, key, ca = tls.cert.read_bytes(), tls.key.read_bytes(), tls.ca.read_bytes()
        check_pair(read_cert(tls.cert), read_key(tls.key), tls.cert.parent)
        shutil.rmtree(dest, ignore_errors=True)
        ensure_dir(dest)
        files = {
            "ca-cert.pem": (ca, CERT_MODE),
            "server-cert.pem": (cert, CERT_MODE),
            "server-key.pem": (key, KEY_MODE),
            "client-cert.pem": (cert, CERT_MODE),
            "client-key.pem": (key, KEY_MODE),
        }
        for name, (data, mode) in files.items():
            write_file(dest / name, data, mode=mode, overwrite=True)
    except (OSError, PkiError) as exc:
        raise DriverError(f"cannot lay out the migration TLS credentials in {dest}: {exc}") from exc
    return dest


async def listen(qmp: QMPClient, params: MigrationParams, uri: str) -> None:
    """Destination: TLS with authz, matching capabilities, then listen."""
    await run(qmp, "migrate-set-capabilities", {"capabilities": capabilities(params, source=False)})
    await run(qmp, "migrate-set-parameters", {"tls-creds": TLS_SERVER_ID, "tls-authz": AUTHZ_ID})
    await run(qmp, "migrate-incoming", {"uri": uri})


async def add_client_creds(qmp: QMPClient, creds: Path) -> None:
    """Source: (re)create the client credentials, so renewed certificates are read."""
    objects = await run(qmp, "qom-list", {"path": "/objects"})
    if any(obj.get("name") == TLS_CLIENT_ID for obj in objects):
        await run(qmp, "object-del", {"id": TLS_CLIENT_ID})
    await run(qmp, "object-add", tls_creds_object(creds, server=False))


async def send(
    qmp: QMPClient, creds: Path, channel: MigrationChannel, params: MigrationParams
) -> None:
    """Source: TLS to the destination's certificate name, convergence settings, then go."""
    await add_client_creds(qmp, creds)
    caps = capabilities(params, source=True, disk=channel.disk_port is not None)
    await run(qmp, "migrate-set-capabilities", {"capabilities": caps})
    settings = {
        "tls-creds": TLS_CLIENT_ID,
        "tls-hostname": channel.tls_hostname,
        "max-bandwidth": params.max_bandwidth_bytes,
        "downtime-limit": params.downtime_limit_ms,
    }
    await run(qmp, "migrate-set-parameters", settings)
    await run(qmp, "migrate", {"uri": tcp_uri(channel.address, channel.port)})
