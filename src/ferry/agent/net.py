"""Guest taps on the host's instance bridge, in the agent's own network namespace.

The agent runs in its host's namespace (in the lab it is started with `ip netns exec`), so every
function here works on the namespace of the calling process. pyroute2 0.9 is asyncio-native
(`AsyncIPRoute` is its core); requests are awaited on the caller's loop. Creating a tap is an
ioctl on /dev/net/tun that pyroute2 performs in-process: quick, not worth a thread.

A tap is created persistent, owned by root (uid 0, gid 0), single-queue and without packet
information, then enslaved to the bridge and brought up. QEMU opens the existing tap by name
(`-netdev tap,ifname=NAME,script=no,downscript=no`), so the agent creates it first; the link has
no carrier until QEMU attaches.

MAC addresses: the guest NIC's MAC is set by QEMU (`-device virtio-net-pci,mac=...`), never on
the tap. The tap's own MAC must differ from the guest's (a bridge treats its ports' addresses as
local and would swallow the guest's frames). Left alone, the kernel gives the tap a random
locally-administered MAC; `tap_mac(guest_mac)` gives a deterministic one instead, libvirt-style:
the guest MAC with the first octet 0xfe (locally administered, unicast, and high, so a bridge that
takes the lowest port MAC as its own never picks it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

TAP_PREFIX = "fy"
MAX_NICS = 100
IFNAMSIZ = 15
IFF_UP = 0x1
IFF_TAP = 2  # IFLA_TUN_TYPE of a tap (1 is tun)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_HEX_ID_RE = re.compile(r"[0-9a-f-]+")


class TapError(RuntimeError):
    """A tap could not be created, changed or deleted."""


@dataclass(frozen=True)
class TapInfo:
    name: str
    bridge: str | None
    up: bool
    carrier: bool  # True once a process (QEMU) has the tap open
    mac: str


def tap_name(instance_id: str, index: int) -> str:
    """The tap of NIC `index` of an instance: `fy` + 10 hex digits + `n` + index (<= 15 chars).

    For the usual UUID ids the hex digits are the id's first ten, so an operator can tell whose
    tap it is; other ids are hashed. Deterministic: a restarted agent finds its taps again."""
    if not 0 <= index < MAX_NICS:
        raise ValueError(f"NIC index {index} outside 0..{MAX_NICS - 1}")
    ident = instance_id.lower()
    digits = ident.replace("-", "")
    if not (_HEX_ID_RE.fullmatch(ident) and len(digits) >= 10):
        digits = hashlib.blake2b(instance_id.encode(), digest_size=5).hexdigest()
    return f"{TAP_PREFIX}{digits[:10]}n{index}"


def tap_mac(guest_mac: str) -> str:
    """A tap MAC derived from, and different from, the guest NIC's MAC (see module doc)."""
    mac = _check_mac(guest_mac)
    first = "fe" if not mac.startswith("fe") else "fa"
    return first + mac[2:]


def _check_mac(mac: str) -> str:
    mac = mac.lower()
    if not _MAC_RE.fullmatch(mac):
        raise ValueError(f"invalid MAC address {mac!r}")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{mac} is a multicast address")
    return mac


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid interface name {name!r} (1-{IFNAMSIZ} of [A-Za-z0-9_.-])")
    return name


@contextlib.asynccontextmanager
async def _rtnl() -> AsyncIterator[Any]:
    ipr = AsyncIPRoute(groups=0)  # requests only, no event subscriptions
    try:
        yield ipr
    finally:
        ipr.close()


async def _lookup(ipr: Any, name: str) -> Any | None:
    """The link message of `name`, or None."""
    found = await ipr.link_lookup(ifname=name)
    if not found:
        return None
    msgs = await ipr.link("get", index=found[0])
    return msgs[0] if msgs else None


def _is_tap(msg: Any) -> bool:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is None or linkinfo.get_attr("IFLA_INFO_KIND") != "tun":
        return False
    data = linkinfo.get_attr("IFLA_INFO_DATA")
    return data is not None and data.get_attr("IFLA_TUN_TYPE") == IFF_TAP


async def create_tap(name: str, bridge: str, mac: str | None = None) -> None:
    """Create tap `name` (root-owned, persistent), set its MAC if given, enslave it to
    `bridge`, bring it up. Idempotent: an existing tap is re-enslaved and brought up."""
    _check_name(name)
    if mac is not None:
        mac = _check_mac(mac)
    async with _rtnl() as ipr:
        br = await _lookup(ipr, bridge)
        if br is None or br.get(("linkinfo", "kind")) != "bridge":
            raise TapError(f"bridge {bridge!r} does not exist in this namespace")
        link = await _lookup(ipr, name)
        if link is None:
            try:
                await ipr.link(
                    "add",
                    ifname=name,
                    kind="tuntap",
                    mode="tap",
                    uid=0,
                    gid=0,
                    ifr={"no_pi": 1, "one_queue": 0, "vnet_hdr": 0, "multi_queue": 0},
                )
            except NetlinkError as exc:
                raise TapError(f"creating tap {name}: {exc}") from exc
            link = await _lookup(ipr, name)
            if link is None:
                raise TapError(f"tap {name} vanished right after creation")
        elif not _is_tap(link):
            raise TapError(f"{name} exists and is not a tap")
        index = link["index"]
        try:
            if mac is not None and link.get("address") != mac:
                await ipr.link("set", index=index, address=mac)
            await ipr.link("set", index=index, master=br["index"], state="up")
        except NetlinkError as exc:
            raise TapError(f"plugging tap {name} into {bridge}: {exc}") from exc


async def delete_tap(name: str) -> None:
    """Delete tap `name`; nothing happens if it does not exist. Refuses non-tap links."""
    _check_name(name)
    async with _rtnl() as ipr:
        link = await _lookup(ipr, name)
        if link is None:
            return
        if not _is_tap(link):
            raise TapError(f"{name} is not a tap; not deleting it")
        try:
            await ipr.link("del", index=link["index"])
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise TapError(f"deleting tap {name}: {exc}") from exc


async def list_taps(prefix: str = TAP_PREFIX) -> list[TapInfo]:
    """Taps of this namespace whose name starts with `prefix`, sorted by name."""
    async with _rtnl() as ipr:
        links = [msg async for msg in await ipr.link("dump")]
    names = {msg["index"]: msg.get("ifname") for msg in links}
    taps = []
    for msg in links:
        name = msg.get("ifname")
        if not name.startswith(prefix) or not _is_tap(msg):
            continue
        master = msg.get("master")
        taps.append(
            TapInfo(
                name=name,
                bridge=names.get(master) if master else None,
                up=bool(msg["flags"] & IFF_UP),
                carrier=bool(msg.get("carrier")),
                mac=msg.get("address"),
            )
        )
    return sorted(taps, key=lambda tap: tap.name)
