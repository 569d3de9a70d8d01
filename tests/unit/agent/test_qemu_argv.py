"""The QEMU command line: pinned virtual hardware, each MAC on its NIC and each tap on its netdev,
and the guest's boot arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.agent.drivers.base import GuestSpec, PortSpec
from ferry.agent.drivers.qemu_argv import (
    CPU_MODEL,
    MACHINE_TYPE,
    TCG_RAM_PAD_KIB,
    DiskFiles,
    QemuConfig,
    guest_argv,
    kernel_cmdline,
)

CONFIG = QemuConfig(run_dir=Path("/run/ferry"), kernel=Path("/img/vmlinuz"), initrd=Path("/img/rd"))
RUNDIR = Path("/run/ferry/abc")
PORTS = (
    PortSpec("default", "52:54:00:aa:bb:01", "198.19.0.2/16", "198.19.0.1"),
    PortSpec("storage", "52:54:00:aa:bb:02", "10.20.0.7/24"),
)


def spec(ports: tuple[PortSpec, ...] = PORTS, dirty: int = 0) -> GuestSpec:
    return GuestSpec("0e3c9a52-0000-4000-8000-000000000001", "vm1", 2, 512, ports, dirty)


def option(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag`, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_virtual_hardware_is_pinned() -> None:
    argv = guest_argv(CONFIG, spec(), RUNDIR, ["tap0", "tap1"])
    assert (MACHINE_TYPE, CPU_MODEL) == ("pc-q35-7.2", "qemu64")
    assert option(argv, "-machine") == [MACHINE_TYPE]
    assert option(argv, "-cpu") == [CPU_MODEL]
    assert option(argv, "-m") == ["524296K"] and option(argv, "-smp") == ["2"]
    assert option(argv, "-uuid") == [spec().id]
    assert "-nodefaults" in argv and "-daemonize" in argv


def test_tcg_ram_is_off_the_256_kib_grid_and_kvm_ram_is_the_flavor() -> None:
    """QEMU < 9.0 under TCG loses writes while migrating RAM of whole 256 KiB blocks (see
    TCG_RAM_PAD_KIB); KVM tracks dirty pages itself and gets the flavor's size exactly."""
    tcg = option(guest_argv(CONFIG, spec(), RUNDIR, ["tap0", "tap1"]), "-m")
    kib = int(tcg[0].removesuffix("K"))
    assert kib == 512 * 1024 + TCG_RAM_PAD_KIB and kib % 256 != 0
    assert kib % 8 == 0  # QEMU rounds RAM up to 8 KiB: the size asked is the size given
    kvm = QemuConfig(CONFIG.run_dir, CONFIG.kernel, CONFIG.initrd, accel="kvm")
    assert option(guest_argv(kvm, spec(), RUNDIR, ["tap0", "tap1"]), "-m") == ["512"]
    assert option(guest_argv(kvm, spec(), RUNDIR, ["tap0", "tap1"]), "-accel") == ["kvm"]
    assert option(guest_argv(CONFIG, spec(), RUNDIR, ["tap0", "tap1"]), "-accel") == ["tcg"]


def test_config_overrides_machine_and_cpu() -> None:
    config = QemuConfig(
        CONFIG.run_dir, CONFIG.kernel, CONFIG.initrd, machine_type="pc-q35-8.2", cpu_model="EPYC"
    )
    argv = guest_argv(config, spec(), RUNDIR, ["tap0", "tap1"])
    assert option(argv, "-machine") == ["pc-q35-8.2"] and option(argv, "-cpu") == ["EPYC"]


def test_each_mac_is_on_its_nic_and_each_tap_on_its_netdev() -> None:
    argv = guest_argv(CONFIG, spec(), RUNDIR, ["fa-tap0", "fa-tap1"])
    netdevs, devices = option(argv, "-netdev"), option(argv, "-device")
    assert len(netdevs) == len(devices) == 2
    for index, (port, tap) in enumerate(zip(PORTS, ["fa-tap0", "fa-tap1"], strict=True)):
        netdev = dict(kv.split("=") for kv in netdevs[index].split(",")[1:])
        assert netdevs[index].startswith("tap,")
        assert netdev["ifname"] == tap and netdev["id"] == f"net{index}"
        assert (netdev["script"], netdev["downscript"]) == ("no", "no")
        device = devices[index].split(",")
        assert device[0] == "virtio-net-pci"
        assert f"mac={port.mac}" in device and f"netdev=net{index}" in device
        assert tap not in devices[index] and port.mac not in netdevs[index]


def test_taps_must_match_ports() -> None:
    with pytest.raises(ValueError):
        guest_argv(CONFIG, spec(), RUNDIR, ["tap0"])


def test_files_live_in_the_guest_rundir() -> None:
    argv = guest_argv(CONFIG, spec(), RUNDIR, ["tap0", "tap1"])
    assert option(argv, "-pidfile") == [str(RUNDIR / "qemu.pid")]
    assert option(argv, "-qmp") == [
        f"unix:{RUNDIR / 'qmp.sock'},server=on,wait=off",  # commands
        f"unix:{RUNDIR / 'events.sock'},server=on,wait=off",  # events
    ]
    assert option(argv, "-serial") == [f"file:{RUNDIR / 'serial.log'}"]
    assert option(argv, "-kernel") == ["/img/vmlinuz"] and option(argv, "-initrd") == ["/img/rd"]


def test_kernel_cmdline_carries_name_address_gateway_and_workload() -> None:
    args = kernel_cmdline(spec(dirty=50)).split()
    assert "console=ttyS0" in args
    assert {"ferry.name=vm1", "ferry.ip=198.19.0.2/16", "ferry.gw=198.19.0.1"} <= set(args)
    assert "ferry.dirty=50" in args
    assert not [a for a in args if a.startswith("ferry.ip=10.20.")]  # the first port only
    argv = guest_argv(CONFIG, spec(dirty=50), RUNDIR, ["tap0", "tap1"])
    assert option(argv, "-append") == [" ".join(args)]


def test_kernel_cmdline_leaves_out_what_is_not_there() -> None:
    args = kernel_cmdline(spec(ports=PORTS[1:])).split()
    assert "ferry.ip=10.20.0.7/24" in args
    assert not [a for a in args if a.startswith(("ferry.gw=", "ferry.dirty="))]
    assert "ferry.ip=0.0.0.0/32" in kernel_cmdline(spec(ports=())).split()


def test_a_disk_guest_boots_from_its_disk_through_the_firmware() -> None:
    """No -kernel/-append: the firmware runs the image's bootloader; the overlay is opened
    O_DIRECT on top of this host's cached image, whatever path the overlay recorded; settings
    go as SMBIOS OEM strings."""
    disk = DiskFiles(Path("/srv/disks/abc/disk.qcow2"), Path("/var/cache/img/f00d"), "qcow2")
    with_disk = GuestSpec(spec().id, "vm1", 1, 128, PORTS, dirty_rate_mbps=8, disk_write_kibps=64)
    argv = guest_argv(CONFIG, with_disk, RUNDIR, ["tap0", "tap1"], disk)
    assert not {"-kernel", "-initrd", "-append"} & set(argv)
    nodes = {n["node-name"]: n for n in map(json.loads, option(argv, "-blockdev"))}
    assert nodes["base-file"] == {
        "driver": "file",
        "filename": "/var/cache/img/f00d",
        "node-name": "base-file",
        "read-only": True,
    }
    assert nodes["root-file"]["cache"] == {"direct": True, "no-flush": False}
    assert nodes["root"] == {
        "driver": "qcow2",
        "file": "root-file",
        "node-name": "root",
        "backing": "base",
    }
    assert "virtio-blk-pci,drive=root,id=disk0,bootindex=1" in option(argv, "-device")
    assert option(argv, "-smbios") == [
        "type=11,value=io.ferry.dirty=8",
        "type=11,value=io.ferry.diskwrite=64",
    ]
    raw = DiskFiles(disk.overlay, disk.base, "raw")
    raw_nodes = [
        json.loads(n)
        for n in option(guest_argv(CONFIG, with_disk, RUNDIR, ["t0", "t1"], raw), "-blockdev")
    ]
    assert raw_nodes[1]["driver"] == "raw"
