"""The lab's disk image: a bootable qcow2 built the way a cloud image is, from Debian packages.

``build_disk_image(out_dir)`` writes ``out_dir/ferry-lab.qcow2``, a 256 MiB (virtual) disk
with an MBR partition table:

- the MBR is syslinux's ``mbr.bin``; partition 1 (FAT, bootable, 32 MiB) holds syslinux,
  ``syslinux.cfg``, the Debian cloud kernel and a small initramfs (virtio modules, mount the
  root, switch to it: lab/image_rootfs.py);
- partition 2 (ext4, the rest) is the guest's root filesystem: static busybox, /sbin/init
  (DHCP, SMBIOS settings, httpd, workloads), the pages, and room for the guest to write.

So a guest boots from it as from any uploaded cloud image: firmware, the bootloader inside the
image, the kernel it names. Nothing is mounted and nothing needs root: the filesystems are
made into files (`mkfs.fat -C`, `mke2fs -d`), syslinux installs into the FAT file through
mtools, and the partitions are copied into place. The tools come from Debian's syslinux,
syslinux-common, mtools, dosfstools, e2fsprogs, fdisk and qemu-utils. A build whose inputs
match the manifest (``disk.json``) and whose output is intact is not redone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ferry.lab.image import APPLETS, sha256_file
from ferry.lab.image_cpio import CpioEntry, char_device, directory, regular, symlink, write_newc
from ferry.lab.image_init import INDEX_CGI, MODULE_DIR, WWW_DIR
from ferry.lab.image_rootfs import DATA_DIR, UDHCPC_SCRIPT, boot_init, disk_cgi, root_init
from ferry.lab.image_sources import (
    VIRTIO_NET_MODULES,
    ImageError,
    ImageSources,
    find_kernel,
    kernel_version,
    locate_modules,
    read_busybox,
)

FORMAT = 1
DISK_FILE = "ferry-lab.qcow2"
MANIFEST_FILE = "disk.json"
VIRTIO_BLK_MODULES = ("virtio_blk",)
SECTOR = 512
BOOT_START = 2048  # sectors: partitions start at 1 MiB
BOOT_MIB = 32
DISK_MIB = 256
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
ROOT_APPLETS = (*APPLETS, "cut", "grep", "sha256sum", "sync", "touch", "tr", "udhcpc", "umount")
BOOT_APPLETS = ("echo", "insmod", "mkdir", "mount", "sh", "switch_root", "umount", "usleep")
SYSLINUX_CFG = """DEFAULT ferry
PROMPT 0
TIMEOUT 0
LABEL ferry
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet panic=-1 root=/dev/vda2
"""
# The tools of the build, each with the Debian package that has it.
TOOLS = {
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "mke2fs": "e2fsprogs",
    "sfdisk": "fdisk",
    "qemu-img": "qemu-utils",
}


@dataclass(frozen=True)
class DiskImage:
    path: Path
    sha256: str
    virtual_size: int
    kernel_version: str
    rebuilt: bool = True


def boot_entries(
    busybox: bytes, modules: list[tuple[str, Path]], builtin: list[str]
) -> list[CpioEntry]:
    entries = [directory(name) for name in ("bin", "dev", "lib", MODULE_DIR, "proc", "sys")]
    entries += [
        char_device("dev/console", 5, 1),
        regular("bin/busybox", busybox, 0o755),
        regular("init", boot_init([n for n, _ in modules], builtin).encode(), 0o755),
    ]
    entries += [symlink(f"bin/{applet}", "busybox") for applet in BOOT_APPLETS]
    entries += [regular(f"{MODULE_DIR}/{name}.ko", path.read_bytes()) for name, path in modules]
    return entries


def root_entries(busybox: bytes) -> list[CpioEntry]:
    dirs = ("bin", "sbin", "dev", "etc", "proc", "run", "sys", "tmp", "var", "var/lib", DATA_DIR)
    entries = [directory(name) for name in (*dirs, WWW_DIR, f"{WWW_DIR}/cgi-bin")]
    entries += [
        regular("bin/busybox", busybox, 0o755),
        regular("sbin/init", root_init().encode(), 0o755),
        regular("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755),
        regular("etc/hostname", b"guest\n"),
        regular(f"{WWW_DIR}/cgi-bin/index.cgi", INDEX_CGI.encode(), 0o755),
        regular(f"{WWW_DIR}/cgi-bin/disk.cgi", disk_cgi().encode(), 0o755),
    ]
    entries += [symlink(f"bin/{applet}", "busybox") for applet in ROOT_APPLETS]
    return entries


def _materialize(entries: list[CpioEntry], root: Path) -> None:
    """Write cpio-style entries as a directory tree (mke2fs -d copies it into the filesystem)."""
    for entry in sorted(entries, key=lambda e: e.name):
        path = root / entry.name
        if entry.is_dir:
            path.mkdir(parents=True, exist_ok=True)
        elif entry.is_symlink:
            path.symlink_to(entry.data.decode())
        elif stat.S_ISREG(entry.mode):
            path.write_bytes(entry.data)
            path.chmod(stat.S_IMODE(entry.mode))
    for entry in entries:  # fixed times, so the filesystem depends on the content only
        os.utime(root / entry.name, (0, 0), follow_symlinks=False)


def _run(*argv: str, env: dict[str, str] | None = None, stdin: str | None = None) -> None:
    try:
        subprocess.run(  # noqa: S603 - the build's own tools, argv built here
            argv,
            input=stdin.encode() if stdin is not None else None,
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "SOURCE_DATE_EPOCH": "0", **(env or {})},
        )
    except FileNotFoundError as exc:
        raise ImageError(f"{argv[0]} is missing (install {TOOLS.get(argv[0], argv[0])})") from exc
    except subprocess.CalledProcessError as exc:
        why = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ImageError(f"{' '.join(argv[:2])} failed: {why[0]}") from exc


def _check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if not MBR_BIN.is_file():
        missing.append("syslinux-common")
    if missing:
        raise ImageError(f"building the disk image needs: {', '.join(missing)} (apt-get install)")


def _boot_partition(work: Path, kernel: Path, initrd: bytes) -> Path:
    boot = work / "boot.img"
    _run("mkfs.fat", "-C", "-n", "FERRYBOOT", "-i", "fe77b007", str(boot), str(BOOT_MIB * 1024))
    (work / "initrd.gz").write_bytes(initrd)
    (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
    shutil.copyfile(kernel, work / "vmlinuz")
    for name in ("vmlinuz", "initrd.gz", "syslinux.cfg"):
        _run("mcopy", "-i", str(boot), str(work / name), f"::/{name}")
    _run("syslinux", "--install", str(boot))
    return boot


def _root_partition(work: Path, entries: list[CpioEntry], mib: int) -> Path:
    tree, root = work / "rootfs", work / "root.img"
    tree.mkdir()
    _materialize(entries, tree)
    _run(
        "mke2fs", "-q", "-F", "-t", "ext4", "-L", "ferry-root",
        "-U", "6a1e0000-f377-4000-8000-000000000001", "-E", "root_owner=0:0,hash_seed="
        "6a1e0000-f377-4000-8000-000000000002", "-d", str(tree), str(root), f"{mib}M",
        env={"E2FSPROGS_FAKE_TIME": "1"},
    )  # fmt: skip
    return root


def _assemble(work: Path, boot: Path, root: Path) -> Path:
    raw = work / "disk.raw"
    root_start = BOOT_START + BOOT_MIB * 1024 * 1024 // SECTOR
    with raw.open("wb") as out:
        out.truncate(DISK_MIB * 1024 * 1024)
    table = (
        "label: dos\nlabel-id: 0xfe77d15c\n"
        f"start={BOOT_START}, size={BOOT_MIB * 2048}, type=c, bootable\n"
        f"start={root_start}, type=83\n"
    )
    _run("sfdisk", "-q", str(raw), stdin=table)
    with raw.open("r+b") as out:
        out.write(MBR_BIN.read_bytes()[:440])
        for part, start in ((boot, BOOT_START), (root, root_start)):
            out.seek(start * SECTOR)
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    qcow2 = work / DISK_FILE
    _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
    return qcow2


def _up_to_date(out_dir: Path, inputs: str) -> dict[str, object] | None:
    try:
        old = json.loads((out_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("format") != FORMAT or old.get("inputs") != inputs:
        return None
    disk = out_dir / DISK_FILE
    return old if disk.is_file() and sha256_file(disk) == old.get("sha256") else None


def build_disk_image(
    out_dir: Path, force: bool = False, *, sources: ImageSources | None = None
) -> DiskImage:
    """Build (or find up to date) the lab's disk image in `out_dir`; ImageError if impossible."""
    sources = sources or ImageSources()
    kernel = find_kernel(sources.boot_dir)
    version = kernel_version(kernel)
    modules = locate_modules(sources.modules_root, version, VIRTIO_NET_MODULES + VIRTIO_BLK_MODULES)
    busybox = read_busybox(sources.busybox)
    boot_cpio = write_newc(boot_entries(busybox, modules.files, modules.builtin))
    root = root_entries(busybox)
    parts = [hashlib.sha256(kernel.read_bytes()).hexdigest(), hashlib.sha256(boot_cpio).hexdigest()]
    parts.append(hashlib.sha256(write_newc(root)).hexdigest())
    inputs = hashlib.sha256(f"{FORMAT}:{':'.join(parts)}:{SYSLINUX_CFG}".encode()).hexdigest()
    existing = None if force else _up_to_date(out_dir, inputs)
    if existing is not None:
        return DiskImage(
            out_dir / DISK_FILE, str(existing["sha256"]), DISK_MIB << 20, version, rebuilt=False
        )
    _check_tools()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".disk-", dir=out_dir) as tmp:
        work = Path(tmp)
        boot = _boot_partition(work, kernel, gzip.compress(boot_cpio, 9, mtime=0))
        root_mib = DISK_MIB - BOOT_MIB - 1
        qcow2 = _assemble(work, boot, _root_partition(work, root, root_mib))
        sha = sha256_file(qcow2)
        qcow2.replace(out_dir / DISK_FILE)
    manifest = {"format": FORMAT, "inputs": inputs, "sha256": sha, "kernel_version": version}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return DiskImage(out_dir / DISK_FILE, sha, DISK_MIB << 20, version)
