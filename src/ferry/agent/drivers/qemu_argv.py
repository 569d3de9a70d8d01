"""The QEMU command line of a guest, pinned so that every host runs the same virtual hardware."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.agent.drivers.base import GuestSpec
from ferry.agent.drivers.guest_cmdline import kernel_args
from ferry.pki.ca import dn_glob

EVENTS_SOCK = "events.sock"  # a guest's second QMP monitor, for its events (qemu_events.py)

MACHINE_TYPE = "pc-q35-7.2"
CPU_MODEL = "qemu64"

# QOM ids of the migration TLS objects. A guest that migrated in keeps its server objects and may
# later migrate out, so the client credentials need an id of their own.
TLS_SERVER_ID = "ferry-tls-server"
TLS_CLIENT_ID = "ferry-tls-client"
AUTHZ_ID = "ferry-authz"

# Under TCG, QEMU before 9.0 loses guest writes during a live migration when the guest's RAM is a
# whole number of 256 KiB blocks: its fast dirty-bitmap sync clears the migration bits without
# resetting the vCPU's TLB, so a page written again through a warm TLB entry is never sent again
# (fixed upstream by "physmem: Fix migration dirty bitmap coherency with TCG memory access"). The
# destination then runs with stale pages: a corrupted kernel, broken virtio rings, a panic. RAM
# of a size off that grid takes QEMU's per-page sync, which resets the TLB: the guest gets this
# much more than its flavor, and `tests/lab/test_tcg_migration_memory.py` compares both ends'
# memory after a migration.
TCG_RAM_PAD_KIB = 8


@dataclass(frozen=True)
class TlsFiles:
    """The host's PEM files (the agent's [tls] ca, cert, key): one certificate with server and
    client use serves both ends of a migration."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class QemuConfig:
    run_dir: Path
    kernel: Path
    initrd: Path
    bridge: str = "br-inst"
    binary: str = "qemu-system-x86_64"
    machine_type: str = MACHINE_TYPE
    cpu_model: str = CPU_MODEL
    accel: str = "tcg"
    tls: TlsFiles | None = None  # None: this host can run guests but never migrate them
    # Where an incoming QEMU listens (the host's migration address); TLS with peer verification
    # and the authz list guard the port whatever the address.
    migration_listen: str = "0.0.0.0"  # noqa: S104


def kernel_cmdline(spec: GuestSpec) -> str:
    """The guest image's boot arguments (name, address, workload); see lab/image_guest.py."""
    port = spec.ports[0] if spec.ports else None
    return kernel_args(
        spec.name,
        port.ip if port else "0.0.0.0/32",
        port.gateway if port else None,
        spec.dirty_rate_mbps,
    )


def ram_size(config: QemuConfig, spec: GuestSpec) -> str:
    """The -m value: the flavor's RAM, off the 256 KiB grid under TCG (see TCG_RAM_PAD_KIB).
    Both ends of a migration build it the same way, as QEMU requires."""
    if config.accel == "tcg":
        return f"{spec.ram_mb * 1024 + TCG_RAM_PAD_KIB}K"
    return str(spec.ram_mb)


@dataclass(frozen=True)
class DiskFiles:
    """A guest's root disk on this host: its overlay and the image it is layered on."""

    overlay: Path
    base: Path  # the image, in this host's cache
    base_format: str  # qcow2 or raw


def disk_argv(disk: DiskFiles) -> list[str]:
    """The disk as an explicit node chain (as libvirt does it): the overlay's backing is the
    image from this host's cache whatever path the overlay recorded, read-only and shared by
    every guest of the image. The overlay is opened with O_DIRECT (cache=none), so writes go
    to the storage, not this host's page cache: on shared storage the destination of a
    migration reads what the source wrote. QEMU's image locks and its inactivation of the
    source's images at the switchover keep the two QEMUs from writing at once."""
    direct = {"direct": True, "no-flush": False}
    nodes: list[dict[str, Any]] = [
        {"driver": "file", "filename": str(disk.base), "node-name": "base-file", "read-only": True},
        {"driver": disk.base_format, "file": "base-file", "node-name": "base", "read-only": True},
        {
            "driver": "file",
            "filename": str(disk.overlay),
            "node-name": "root-file",
            "cache": direct,
            "aio": "native",
        },
        {"driver": "qcow2", "file": "root-file", "node-name": "root", "backing": "base"},
    ]
    argv: list[str] = []
    for node in nodes:
        argv += ["-blockdev", json.dumps(node)]
    return [*argv, "-device", "virtio-blk-pci,drive=root,id=disk0,bootindex=1"]


def oem_strings(spec: GuestSpec) -> list[str]:
    """Settings for a guest that boots from its disk, as SMBIOS OEM strings (type 11), which
    the lab image reads at boot: nothing goes on a kernel command line the image owns."""
    values = []
    if spec.dirty_rate_mbps:
        values.append(f"io.ferry.dirty={spec.dirty_rate_mbps}")
    if spec.disk_write_kibps:
        values.append(f"io.ferry.diskwrite={spec.disk_write_kibps}")
    argv: list[str] = []
    for value in values:
        argv += ["-smbios", f"type=11,value={value}"]
    return argv


def boot_argv(config: QemuConfig, spec: GuestSpec, disk: DiskFiles | None) -> list[str]:
    """From the disk (the firmware runs the image's bootloader), or without one from the
    configured kernel and initramfs."""
    if disk is not None:
        return [*disk_argv(disk), *oem_strings(spec)]
    return [
        "-kernel",
        str(config.kernel),
        "-initrd",
        str(config.initrd),
        "-append",
        kernel_cmdline(spec),
    ]


def guest_argv(
    config: QemuConfig,
    spec: GuestSpec,
    rundir: Path,
    taps: list[str],
    disk: DiskFiles | None = None,
) -> list[str]:
    argv = [
        config.binary,
        "-name",
        f"{spec.name},process=qemu-{spec.id}",
        "-uuid",
        spec.id,
        "-machine",
        config.machine_type,
        "-accel",
        config.accel,
        "-cpu",
        config.cpu_model,
        "-m",
        ram_size(config, spec),
        "-smp",
        str(spec.vcpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        f"file:{rundir / 'serial.log'}",
        "-qmp",
        f"unix:{rundir / 'qmp.sock'},server=on,wait=off",
        "-qmp",  # the event monitor (qemu_events.py): QEMU sends its events to every monitor
        f"unix:{rundir / EVENTS_SOCK},server=on,wait=off",
        "-pidfile",
        str(rundir / "qemu.pid"),
        *boot_argv(config, spec, disk),
        "-daemonize",
    ]
    for index, (port, tap) in enumerate(zip(spec.ports, taps, strict=True)):
        argv += [
            "-netdev",
            f"tap,id=net{index},ifname={tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=net{index},mac={port.mac},id=nic{index}",
        ]
    return argv


def tls_creds_object(creds_dir: Path, *, server: bool) -> dict[str, Any]:
    """QMP object-add / JSON -object arguments of the migration credentials: peers are always
    verified (a destination demands a client certificate of the cluster CA)."""
    return {
        "qom-type": "tls-creds-x509",
        "id": TLS_SERVER_ID if server else TLS_CLIENT_ID,
        "dir": str(creds_dir),
        "endpoint": "server" if server else "client",
        "verify-peer": True,
    }


def authz_object() -> dict[str, Any]:
    """Admit cluster hosts only: the client certificate's DN must match O=Ferry,OU=host,CN=*
    (a controller or operator certificate of the same CA is denied)."""
    rule = {"match": dn_glob(), "policy": "allow", "format": "glob"}
    return {"qom-type": "authz-list", "id": AUTHZ_ID, "policy": "deny", "rules": [rule]}


def incoming_argv(creds_dir: Path) -> list[str]:
    """What a migration destination adds to the guest's own command line: wait for
    `migrate-incoming`, with server credentials and the authz list. Objects are given as JSON,
    so a DN's commas need no doubling."""
    return [
        "-incoming",
        "defer",
        "-object",
        json.dumps(tls_creds_object(creds_dir, server=True)),
        "-object",
        json.dumps(authz_object()),
    ]
