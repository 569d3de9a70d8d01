"""The cpio "newc" archive format (what the Linux kernel unpacks as an initramfs), in pure Python.

Writing an archive needs no root: device nodes and ownership are just header fields. Every entry
gets the same mtime, uid and gid, and entries are written sorted by name (a parent directory always
sorts before its contents), so the same entries always give the same bytes.

Format (kernel Documentation/driver-api/early-userspace/buffer-format.rst): each entry is a
110-byte ASCII header ("070701" and 13 eight-digit hex fields), the NUL-terminated name padded to
a multiple of 4, then the data padded to a multiple of 4. A "TRAILER!!!" entry ends the archive.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_FIELDS = 13
_HEADER_LEN = len(MAGIC) + 8 * _FIELDS


class CpioError(ValueError):
    """A malformed archive, or entries that cannot form one."""


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. `name` is relative ("bin/busybox"); `mode` includes the file type."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


def directory(name: str, perm: int = 0o755) -> CpioEntry:
    """A directory entry."""
    return CpioEntry(name, stat.S_IFDIR | perm)


def regular(name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    """A regular file entry."""
    return CpioEntry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> CpioEntry:
    """A symbolic link entry; the data is the link target."""
    return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())


def char_device(name: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
    """A character device node (e.g. dev/console, 5:1)."""
    return CpioEntry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: CpioEntry, mtime: int) -> bytes:
    nlink = 2 if entry.is_dir else 1
    name_size = len(entry.name.encode()) + 1
    fields = (ino, entry.mode, 0, 0, nlink, mtime, len(entry.data), 0, 0, *entry.rdev, name_size, 0)
    return MAGIC + b"".join(b"%08X" % value for value in fields)


def _member(ino: int, entry: CpioEntry, mtime: int) -> bytes:
    head = _header(ino, entry, mtime) + entry.name.encode() + b"\0"
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def _check_names(entries: list[CpioEntry]) -> None:
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise CpioError("duplicate names in archive")
    for name in names:
        if not name or name.startswith("/") or ".." in name.split("/") or name == TRAILER:
            raise CpioError(f"invalid archive member name {name!r}")


def write_newc(entries: Iterable[CpioEntry], mtime: int = 0) -> bytes:
    """The archive of `entries`, sorted by name, with fixed mtime/uid/gid and inode numbers."""
    ordered = sorted(entries, key=lambda entry: entry.name)
    _check_names(ordered)
    members = [_member(ino, entry, mtime) for ino, entry in enumerate(ordered, start=1)]
    members.append(_member(0, CpioEntry(TRAILER, 0), 0))
    return b"".join(members)


def _parse_header(data: bytes, offset: int) -> list[int]:
    raw = data[offset : offset + _HEADER_LEN]
    if len(raw) < _HEADER_LEN or raw[:6] != MAGIC:
        raise CpioError(f"no newc header at offset {offset}")
    try:
        return [int(raw[6 + 8 * i : 14 + 8 * i], 16) for i in range(_FIELDS)]
    except ValueError as exc:
        raise CpioError(f"bad header field at offset {offset}") from exc


def read_newc(data: bytes) -> list[CpioEntry]:
    """The entries of a newc archive, in archive order, up to the trailer."""
    entries: list[CpioEntry] = []
    offset = 0
    while True:
        fields = _parse_header(data, offset)
        mode, size, rdev, name_size = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_end = offset + _HEADER_LEN + name_size
        name = data[offset + _HEADER_LEN : name_end - 1].decode()
        start = name_end + (-name_end % 4)
        if name == TRAILER:
            return entries
        if start + size > len(data):
            raise CpioError(f"truncated data for {name!r}")
        entries.append(CpioEntry(name, mode, data[start : start + size], rdev))
        offset = start + size + (-(start + size) % 4)
