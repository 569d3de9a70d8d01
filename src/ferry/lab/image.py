"""The guest image Ferry builds itself: a Debian cloud kernel and a busybox initramfs.

``build_image(out_dir)`` writes ``out_dir/vmlinuz`` (a copy of the newest
/boot/vmlinuz-*-cloud-amd64), ``out_dir/initrd.gz`` (a gzip'd newc cpio: static busybox and a few
applet links, the virtio-net modules, /init) and ``out_dir/image.json`` (what it was built from).
The build is pure Python and needs no root. It is reproducible: entries are sorted, with fixed
mtimes and owners, and gzip gets mtime 0, so the same inputs always give the same sha256. When
image.json shows the same inputs and both outputs are intact, nothing is rewritten.

The build is synchronous (about a second, mostly gzip); async callers wrap it in
``asyncio.to_thread``. What /init does at boot is described in ``ferry.lab.image_init``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ferry.lab.image_cpio import (
    CpioEntry,
    char_device,
    directory,
    regular,
    symlink,
    write_newc,
)
from ferry.lab.image_init import INDEX_CGI, MODULE_DIR, READY_MARKER, WWW_DIR, render_init
from ferry.lab.image_sources import (
    VIRTIO_NET_MODULES,
    ImageError,
    ImageSources,
    ModuleSet,
    find_kernel,
    kernel_version,
    locate_modules,
    read_busybox,
)

__all__ = [
    "READY_MARKER",
    "VIRTIO_NET_MODULES",
    "GuestImage",
    "ImageError",
    "ImageSources",
    "build_image",
    "initramfs_entries",
]

FORMAT = 1
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.gz"
MANIFEST_FILE = "image.json"
APPLETS = (
    "arping", "cat", "dd", "dmesg", "echo", "free", "hostname", "httpd", "insmod", "ip", "kill",
    "ls", "lsmod", "mkdir", "mount", "mv", "nc", "ping", "printf", "ps", "rm", "sh", "sleep",
    "top", "uptime", "usleep", "wget",
)  # fmt: skip
DIRECTORIES = ("bin", "dev", "lib", MODULE_DIR, "proc", "run", "sys", WWW_DIR, f"{WWW_DIR}/cgi-bin")


@dataclass(frozen=True)
class GuestImage:
    """A built image: boot QEMU with ``-kernel kernel -initrd initrd``."""

    kernel: Path
    initrd: Path
    kernel_version: str
    initrd_sha256: str
    rebuilt: bool = True

    @property
    def size(self) -> int:
        """Bytes of kernel plus initrd."""
        return self.kernel.stat().st_size + self.initrd.stat().st_size


def initramfs_entries(busybox: bytes, modules: ModuleSet) -> list[CpioEntry]:
    """Every member of the initramfs (unsorted; the cpio writer sorts)."""
    entries = [directory(name) for name in DIRECTORIES]
    entries += [
        directory("tmp", 0o1777),
        char_device("dev/console", 5, 1),
        char_device("dev/null", 1, 3, 0o666),
        regular("bin/busybox", busybox, 0o755),
        regular(
            "init", render_init([n for n, _ in modules.files], modules.builtin).encode(), 0o755
        ),
        regular(f"{WWW_DIR}/cgi-bin/index.cgi", INDEX_CGI.encode(), 0o755),
    ]
    entries += [symlink(f"bin/{applet}", "busybox") for applet in APPLETS]
    entries += [
        regular(f"{MODULE_DIR}/{name}.ko", path.read_bytes()) for name, path in modules.files
    ]
    return entries


def sha256_file(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see a partial file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(temp).chmod(0o644)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _read_manifest(out_dir: Path) -> dict[str, object]:
    try:
        loaded = json.loads((out_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _existing(out_dir: Path, inputs: str) -> dict[str, object] | None:
    """The manifest of an intact earlier build from the same inputs, else None."""
    old = _read_manifest(out_dir)
    if old.get("format") != FORMAT or old.get("inputs") != inputs:
        return None
    kernel, initrd = out_dir / KERNEL_FILE, out_dir / INITRD_FILE
    if not (kernel.is_file() and initrd.is_file()):
        return None
    intact = sha256_file(kernel) == old.get("kernel_sha256") and sha256_file(initrd) == old.get(
        "initrd_sha256"
    )
    return old if intact else None


def _resolve_kernel(kernel: Path | None, sources: ImageSources) -> Path:
    chosen = kernel if kernel is not None else find_kernel(sources.boot_dir)
    if not chosen.is_file():
        raise ImageError(f"kernel {chosen} does not exist")
    return chosen


def _write_outputs(
    out_dir: Path, kernel: bytes, initrd: bytes, manifest: dict[str, object]
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / KERNEL_FILE, kernel)
    _write_atomic(out_dir / INITRD_FILE, initrd)
    _write_atomic(out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())


def build_image(
    out_dir: Path,
    kernel: Path | None = None,
    force: bool = False,
    *,
    sources: ImageSources | None = None,
) -> GuestImage:
    """Build (or find up to date) the guest image in `out_dir`; raise ImageError if impossible."""
    sources = sources or ImageSources()
    kernel_path = _resolve_kernel(kernel, sources)
    version = kernel_version(kernel_path)
    modules = locate_modules(sources.modules_root, version)
    archive = write_newc(initramfs_entries(read_busybox(sources.busybox), modules))
    kernel_bytes = kernel_path.read_bytes()
    kernel_sha = hashlib.sha256(kernel_bytes).hexdigest()
    archive_sha = hashlib.sha256(archive).hexdigest()
    inputs = hashlib.sha256(f"{FORMAT}:{kernel_sha}:{archive_sha}".encode()).hexdigest()
    existing = None if force else _existing(out_dir, inputs)
    rebuilt = existing is None
    if existing is None:
        initrd = gzip.compress(archive, compresslevel=9, mtime=0)
        existing = {
            "format": FORMAT,
            "inputs": inputs,
            "kernel_version": version,
            "kernel_source": str(kernel_path),
            "kernel_sha256": kernel_sha,
            "initrd_sha256": hashlib.sha256(initrd).hexdigest(),
            "cpio_sha256": archive_sha,
            "modules": [name for name, _ in modules.files],
            "builtin_modules": modules.builtin,
        }
        _write_outputs(out_dir, kernel_bytes, initrd, existing)
    return GuestImage(
        kernel=out_dir / KERNEL_FILE,
        initrd=out_dir / INITRD_FILE,
        kernel_version=version,
        initrd_sha256=str(existing["initrd_sha256"]),
        rebuilt=rebuilt,
    )
