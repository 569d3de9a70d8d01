"""The QEMU command line of a guest, pinned so that every host runs the same virtual hardware."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ferry.agent.drivers.base import GuestSpec
from ferry.lab.image_guest import kernel_args

MACHINE_TYPE = "pc-q35-7.2"
CPU_MODEL = "qemu64"


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


def kernel_cmdline(spec: GuestSpec) -> str:
    """The guest image's boot arguments (name, address, workload); see lab/image_guest.py."""
    port = spec.ports[0] if spec.ports else None
    return kernel_args(
        spec.name,
        port.ip if port else "0.0.0.0/32",
        port.gateway if port else None,
        spec.dirty_rate_mbps,
    )


def guest_argv(config: QemuConfig, spec: GuestSpec, rundir: Path, taps: list[str]) -> list[str]:
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
        str(spec.ram_mb),
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
        "-pidfile",
        str(rundir / "qemu.pid"),
        "-kernel",
        str(config.kernel),
        "-initrd",
        str(config.initrd),
        "-append",
        kernel_cmdline(spec),
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
