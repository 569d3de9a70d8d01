"""The guest image builder, without root or QEMU: fake kernel, modules and busybox in tmp_path."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferry.cli import main as cli_main
from ferry.lab.image import GuestImage, ImageError, ImageSources, build_image
from ferry.lab.image_cpio import (
    CpioEntry,
    CpioError,
    char_device,
    directory,
    read_newc,
    regular,
    symlink,
    write_newc,
)
from ferry.lab.image_guest import GuestBootError, kernel_args, parse_ready, wait_for_ready
from ferry.lab.image_init import READY_MARKER
from ferry.lab.image_sources import VIRTIO_NET_MODULES, find_kernel, kernel_version

VERSION = "6.1.0-99-cloud-amd64"
MODULE_DIRS = {
    "failover": "net/core",
    "net_failover": "drivers/net",
    "virtio_net": "drivers/net",
}


def fake_bzimage(version: str) -> bytes:
    """Enough of a bzImage for the setup header: 'HdrS' and the kernel_version pointer."""
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x300).to_bytes(2, "little")
    text = f"{version} (debian-kernel@lists.debian.org) #1 SMP Debian".encode() + b"\0"
    data[0x500 : 0x500 + len(text)] = text
    return bytes(data)


def fake_module(name: str, version: str = VERSION) -> bytes:
    return b"\x7fELF" + f"\0name={name}\0vermagic={version} SMP mod_unload \0".encode()


@dataclass
class FakeHost:
    sources: ImageSources
    kernel: Path
    modules_dir: Path


def make_host(root: Path, builtin: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> FakeHost:
    """/boot, /lib/modules/VERSION (modules.dep, modules.builtin) and /bin/busybox under root."""
    boot, modules_dir, bin_dir = root / "boot", root / "modules" / VERSION, root / "bin"
    for path in (boot, modules_dir, bin_dir):
        path.mkdir(parents=True)
    kernel = boot / f"vmlinuz-{VERSION}"
    kernel.write_bytes(fake_bzimage(VERSION))
    (bin_dir / "busybox").write_bytes(b"\x7fELF static busybox")
    dep_lines, builtin_lines = [], []
    for name in VIRTIO_NET_MODULES:
        relative = f"kernel/{MODULE_DIRS.get(name, 'drivers/virtio')}/{name}.ko"
        if name in builtin:
            builtin_lines.append(relative)
        elif name not in missing:
            (modules_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (modules_dir / relative).write_bytes(fake_module(name))
            dep_lines.append(f"{relative}:")
    (modules_dir / "modules.dep").write_text("\n".join(dep_lines) + "\n")
    (modules_dir / "modules.builtin").write_text("\n".join(builtin_lines) + "\n")
    sources = ImageSources(bin_dir / "busybox", root / "modules", boot)
    return FakeHost(sources, kernel, modules_dir)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return make_host(tmp_path / "host")


def initramfs(image: GuestImage) -> dict[str, CpioEntry]:
    return {entry.name: entry for entry in read_newc(gzip.decompress(image.initrd.read_bytes()))}


SAMPLE = [
    regular("init", b"#!/bin/sh\n", 0o755),
    directory("bin"),
    symlink("bin/sh", "busybox"),
    regular("bin/busybox", b"x" * 13, 0o755),
    char_device("dev/console", 5, 1),
    directory("dev"),
]


# --- cpio ---------------------------------------------------------------------------------


def test_cpio_round_trips_sorted_by_name() -> None:
    entries = read_newc(write_newc(SAMPLE))
    assert entries == sorted(SAMPLE, key=lambda entry: entry.name)
    assert [entry.name for entry in entries] == sorted(entry.name for entry in entries)


def test_cpio_is_deterministic_and_aligned() -> None:
    archive = write_newc(SAMPLE)
    assert archive == write_newc(reversed(SAMPLE))
    assert len(archive) % 4 == 0
    assert archive.startswith(b"070701")
    assert b"TRAILER!!!\0" in archive


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_cpio_is_readable_by_gnu_cpio() -> None:
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=write_newc(SAMPLE), capture_output=True, check=True
    ).stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines() if "->" not in line]
    assert names == ["bin", "bin/busybox", "dev", "dev/console", "init"]
    assert "bin/sh -> busybox" in listing
    assert "5,   1" in listing  # the console device numbers


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "TRAILER!!!"])
def test_cpio_rejects_bad_names(name: str) -> None:
    with pytest.raises(CpioError):
        write_newc([regular(name, b"")])


def test_cpio_rejects_duplicates_and_garbage() -> None:
    with pytest.raises(CpioError, match="duplicate"):
        write_newc([directory("a"), directory("a")])
    with pytest.raises(CpioError):
        read_newc(b"not an archive")
    with pytest.raises(CpioError):
        read_newc(write_newc(SAMPLE)[:200])


# --- sources ------------------------------------------------------------------------------


def test_kernel_version_comes_from_the_bzimage_header(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(fake_bzimage("6.1.0-7-cloud-amd64"))
    assert kernel_version(kernel) == "6.1.0-7-cloud-amd64"
    named = tmp_path / "vmlinuz-6.2.0-1-cloud-amd64"
    named.write_bytes(b"not a bzImage")
    assert kernel_version(named) == "6.2.0-1-cloud-amd64"
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(ImageError, match="cannot tell"):
        kernel_version(tmp_path / "junk")


def test_newest_kernel_is_chosen_by_version_not_by_name_order(tmp_path: Path) -> None:
    for version in ("6.1.0-9", "6.1.0-10", "5.10.0-30"):
        (tmp_path / f"vmlinuz-{version}-cloud-amd64").write_bytes(b"")
    (tmp_path / "vmlinuz-6.9.0-1-amd64").write_bytes(b"")  # not a cloud kernel
    assert find_kernel(tmp_path).name == "vmlinuz-6.1.0-10-cloud-amd64"
    with pytest.raises(ImageError, match="linux-image-cloud-amd64"):
        find_kernel(tmp_path / "empty")


# --- the image ----------------------------------------------------------------------------


def test_image_contains_busybox_init_and_modules(host: FakeHost, tmp_path: Path) -> None:
    image = build_image(tmp_path / "out", sources=host.sources)
    assert image.kernel_version == VERSION
    assert image.kernel.read_bytes() == host.kernel.read_bytes()
    assert image.initrd_sha256 == hashlib.sha256(image.initrd.read_bytes()).hexdigest()
    files = initramfs(image)
    assert files["bin/busybox"].data == b"\x7fELF static busybox"
    assert stat.S_IMODE(files["bin/busybox"].mode) == 0o755
    for applet in ("sh", "ip", "httpd", "insmod", "dd", "usleep", "mount"):
        assert files[f"bin/{applet}"].is_symlink and files[f"bin/{applet}"].data == b"busybox"
    assert files["dev/console"].rdev == (5, 1)
    for name in VIRTIO_NET_MODULES:
        assert files[f"lib/modules/{name}.ko"].data == fake_module(name)
    assert stat.S_IMODE(files["www/cgi-bin/index.cgi"].mode) == 0o755


def test_init_is_executable_and_loads_the_modules_in_order(host: FakeHost, tmp_path: Path) -> None:
    init = initramfs(build_image(tmp_path / "out", sources=host.sources))["init"]
    assert stat.S_ISREG(init.mode) and stat.S_IMODE(init.mode) == 0o755
    text = init.data.decode()
    assert text.startswith("#!/bin/sh\n")
    loads = [line.split()[1] for line in text.splitlines() if line.startswith("load ")]
    assert loads == list(VIRTIO_NET_MODULES)
    for needle in ("mount -t devtmpfs", "ferry.ip=", "ferry.dirty=", "httpd -p 80", READY_MARKER):
        assert needle in text


def test_initramfs_entries_are_sorted(host: FakeHost, tmp_path: Path) -> None:
    image = build_image(tmp_path / "out", sources=host.sources)
    names = [entry.name for entry in read_newc(gzip.decompress(image.initrd.read_bytes()))]
    assert names == sorted(names)


def test_two_builds_give_the_same_sha256(host: FakeHost, tmp_path: Path) -> None:
    first = build_image(tmp_path / "one", sources=host.sources)
    second = build_image(tmp_path / "two", sources=host.sources)
    assert first.initrd_sha256 == second.initrd_sha256
    assert first.initrd.read_bytes() == second.initrd.read_bytes()


def test_rebuild_is_skipped_when_up_to_date(host: FakeHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = build_image(out, sources=host.sources)
    mtime = first.initrd.stat().st_mtime_ns
    again = build_image(out, sources=host.sources)
    assert first.rebuilt and not again.rebuilt
    assert again.initrd_sha256 == first.initrd_sha256
    assert again.initrd.stat().st_mtime_ns == mtime
    assert build_image(out, force=True, sources=host.sources).rebuilt


def test_changed_inputs_or_damaged_outputs_rebuild(host: FakeHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = build_image(out, sources=host.sources)
    host.sources.busybox.write_bytes(b"\x7fELF a newer busybox")
    changed = build_image(out, sources=host.sources)
    assert changed.rebuilt and changed.initrd_sha256 != first.initrd_sha256
    changed.initrd.write_bytes(b"damaged")
    repaired = build_image(out, sources=host.sources)
    assert repaired.rebuilt and repaired.initrd_sha256 == changed.initrd_sha256


def test_builtin_modules_are_skipped(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host", builtin=("virtio_pci_legacy_dev", "failover"))
    files = initramfs(build_image(tmp_path / "out", sources=host.sources))
    text = files["init"].data.decode()
    assert "lib/modules/failover.ko" not in files
    assert "load failover" not in text and "load virtio_net" in text
    assert "built into this kernel, not loaded: virtio_pci_legacy_dev failover" in text


def test_a_module_neither_present_nor_builtin_fails_clearly(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host", missing=("net_failover",))
    with pytest.raises(ImageError, match="net_failover is neither"):
        build_image(tmp_path / "out", sources=host.sources)


def test_modules_of_another_kernel_are_refused(host: FakeHost, tmp_path: Path) -> None:
    (host.modules_dir / "kernel/drivers/net/virtio_net.ko").write_bytes(
        fake_module("virtio_net", "6.1.0-1-cloud-amd64")
    )
    with pytest.raises(ImageError, match="not built for kernel"):
        build_image(tmp_path / "out", sources=host.sources)


def test_missing_inputs_fail_with_a_clear_message(host: FakeHost, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        build_image(tmp_path / "out", kernel=tmp_path / "nope", sources=host.sources)
    other = tmp_path / "vmlinuz-7.0.0-1-cloud-amd64"
    other.write_bytes(fake_bzimage("7.0.0-1-cloud-amd64"))
    with pytest.raises(ImageError, match=r"no modules for kernel 7\.0\.0-1-cloud-amd64"):
        build_image(tmp_path / "out", kernel=other, sources=host.sources)
    host.sources.busybox.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ImageError, match="not an ELF"):
        build_image(tmp_path / "out", sources=host.sources)


# --- guest contract -----------------------------------------------------------------------


def test_kernel_args_validate_and_render() -> None:
    args = kernel_args("web-1", "198.18.0.10/16", gateway="198.18.0.1", dirty_mibps=20)
    assert args.split() == [
        "console=ttyS0", "quiet", "panic=-1", "ferry.name=web-1", "ferry.ip=198.18.0.10/16",
        "ferry.gw=198.18.0.1", "ferry.dirty=20",
    ]  # fmt: skip
    assert "ferry.dirty" not in kernel_args("a", "198.18.0.10/16")
    for bad in (("bad name", "198.18.0.10/16"), ("a", "198.18.0.10"), ("a", "x/16")):
        with pytest.raises(ValueError):
            kernel_args(*bad)


def test_ready_line_is_parsed_from_a_noisy_log() -> None:
    log = f"[    1.0] noise\r\n{READY_MARKER} name=web-1 ip=198.18.0.10\r\nmore\n"
    assert parse_ready(log) == ("web-1", "198.18.0.10")
    assert parse_ready("booting...\n") is None


async def test_wait_for_ready_sees_a_late_line(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"

    async def boot_later() -> None:
        await asyncio.sleep(0.2)
        log.write_text(f"{READY_MARKER} name=g ip=198.18.0.12\n")

    task = asyncio.create_task(boot_later())
    async with asyncio.timeout(5):
        ready = await wait_for_ready(log, poll=0.02)
    await task
    assert (ready.name, ready.ip) == ("g", "198.18.0.12")
    assert ready.seconds >= 0.2


async def test_wait_for_ready_fails_fast_when_qemu_is_gone(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()  # a pid that no longer runs
    (tmp_path / "serial.log").write_text("Kernel panic - not syncing\n")
    with pytest.raises(GuestBootError, match="Kernel panic"):
        async with asyncio.timeout(5):
            await wait_for_ready(tmp_path / "serial.log", pid=proc.pid, poll=0.01)


# --- CLI ----------------------------------------------------------------------------------


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["ferry", *args])
    try:
        cli_main.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_reports_a_missing_kernel_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = run_cli(monkeypatch, "image", "build", "--out", str(tmp_path), "--kernel", "/nope")
    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: kernel /nope does not exist\n"


@pytest.mark.skipif(not list(Path("/boot").glob("vmlinuz-*-cloud-amd64")), reason="no kernel")
def test_cli_builds_from_the_host_and_prints_the_paths(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_cli(monkeypatch, "image", "build", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"kernel   {tmp_path / 'vmlinuz'}" in out
    assert f"initrd   {tmp_path / 'initrd.gz'}" in out
    assert "status   built" in out
    assert run_cli(monkeypatch, "image", "build", "--out", str(tmp_path)) == 0
    assert "status   up to date" in capsys.readouterr().out
