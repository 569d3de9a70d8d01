"""Where the guest image's parts come from on a Debian host: kernel, modules, busybox.

Everything here only reads files; nothing needs root (the Debian cloud kernel in /boot and the
modules are world-readable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

VIRTIO_NET_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
KERNEL_GLOB = "vmlinuz-*-cloud-amd64"
_HDRS_OFFSET = 0x202
_VERSION_PTR_OFFSET = 0x20E
_SETUP_BASE = 0x200


class ImageError(Exception):
    """The image cannot be built; the message says which input is missing or wrong."""


@dataclass(frozen=True)
class ImageSources:
    """Host paths the image is built from (tests point these at fakes)."""

    busybox: Path = Path("/bin/busybox")
    modules_root: Path = Path("/lib/modules")
    boot_dir: Path = Path("/boot")


@dataclass(frozen=True)
class ModuleSet:
    """The modules to load, in order (name, .ko path), and those built into the kernel."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    builtin: list[str] = field(default_factory=list)


def _natural_key(text: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", text)]


def find_kernel(boot_dir: Path) -> Path:
    """The newest (by version, not mtime) Debian cloud kernel in `boot_dir`."""
    candidates = sorted(boot_dir.glob(KERNEL_GLOB), key=lambda path: _natural_key(path.name))
    if not candidates:
        raise ImageError(
            f"no {KERNEL_GLOB} in {boot_dir} (install linux-image-cloud-amd64, or pass --kernel)"
        )
    return candidates[-1]


def kernel_version(kernel: Path) -> str:
    """The release string of a bzImage (its setup header), else from a vmlinuz-VERSION name."""
    try:
        with kernel.open("rb") as handle:
            head = handle.read(0x8000)
    except OSError as exc:
        raise ImageError(f"cannot read kernel {kernel}: {exc.strerror}") from exc
    if head[_HDRS_OFFSET : _HDRS_OFFSET + 4] == b"HdrS":
        pointer = int.from_bytes(head[_VERSION_PTR_OFFSET : _VERSION_PTR_OFFSET + 2], "little")
        start = pointer + _SETUP_BASE
        if pointer and start < len(head):
            text = head[start:].split(b"\0", 1)[0].decode("ascii", "replace").split()
            if text:
                return text[0]
    if kernel.name.startswith("vmlinuz-"):
        return kernel.name.removeprefix("vmlinuz-")
    raise ImageError(f"cannot tell the kernel version of {kernel} (not a bzImage?)")


def _module_index(modules_dir: Path, index: str) -> dict[str, str]:
    """Module name -> relative path, from modules.dep / modules.builtin (empty if absent)."""
    path = modules_dir / index
    if not path.is_file():
        return {}
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        relative = line.split(":", 1)[0].strip()
        if relative:
            found[_module_name(relative)] = relative
    return found


def _module_name(relative: str) -> str:
    base = relative.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def _find_file(modules_dir: Path, name: str, dep: dict[str, str]) -> Path | None:
    if name in dep:
        return modules_dir / dep[name]
    for pattern in (f"{name}.ko*", f"{name.replace('_', '-')}.ko*"):
        matches = sorted((modules_dir / "kernel").rglob(pattern))
        if matches:
            return matches[0]
    return None


def _check_module(path: Path, name: str, version: str) -> None:
    if path.suffix != ".ko":
        raise ImageError(f"module {name} is compressed ({path}); busybox insmod needs plain .ko")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read module {path}: {exc.strerror}") from exc
    if b"vermagic=" + version.encode() + b" " not in data:
        raise ImageError(f"module {path} was not built for kernel {version}")


def locate_modules(
    modules_root: Path, version: str, names: tuple[str, ...] = VIRTIO_NET_MODULES
) -> ModuleSet:
    """Find each module of `names` for kernel `version`; built-ins are listed, not loaded."""
    modules_dir = modules_root / version
    if not modules_dir.is_dir():
        raise ImageError(f"no modules for kernel {version}: {modules_dir} does not exist")
    dep = _module_index(modules_dir, "modules.dep")
    builtin = _module_index(modules_dir, "modules.builtin")
    result = ModuleSet()
    for name in names:
        path = _find_file(modules_dir, name, dep)
        if path is not None and path.is_file():
            _check_module(path, name, version)
            result.files.append((name, path))
        elif name in builtin:
            result.builtin.append(name)
        else:
            raise ImageError(
                f"kernel module {name} is neither under {modules_dir} nor built in "
                f"(modules.builtin); the guest would have no network"
            )
    return result


def read_busybox(busybox: Path) -> bytes:
    """The static busybox binary (a dynamic one would not run in the initramfs)."""
    try:
        data = busybox.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {busybox} (install busybox-static): {exc.strerror}") from exc
    if data[:4] != b"\x7fELF":
        raise ImageError(f"{busybox} is not an ELF binary")
    if b"/lib64/ld-linux" in data[:4096] or b"/lib/ld-linux" in data[:4096]:
        raise ImageError(f"{busybox} is dynamically linked; install busybox-static")
    return data
