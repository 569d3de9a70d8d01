"""The kernel command line of a guest booted without a disk (-kernel/-initrd): the lab's
diskless image reads its name, address and workload from it (lab/image_init.py). Guests that
boot from their disks get nothing on a command line: their image owns it."""

from __future__ import annotations

import ipaddress
import re

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
BASE_ARGS = ("console=ttyS0", "quiet", "panic=-1")


def kernel_args(name: str, ip: str, gateway: str | None = None, dirty_mibps: int = 0) -> str:
    """The -append string for a guest `name` at `ip` ("ADDR/PREFIX"), validated here."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"guest name {name!r}: 1-64 of letters, digits, '.', '_', '-'")
    ipaddress.IPv4Interface(ip)
    if "/" not in ip:
        raise ValueError(f"guest address {ip!r} needs a prefix length (ADDR/PREFIX)")
    if dirty_mibps < 0:
        raise ValueError("dirty rate cannot be negative")
    args = [*BASE_ARGS, f"ferry.name={name}", f"ferry.ip={ip}"]
    if gateway:
        args.append(f"ferry.gw={ipaddress.IPv4Address(gateway)}")
    if dirty_mibps:
        args.append(f"ferry.dirty={dirty_mibps}")
    return " ".join(args)
