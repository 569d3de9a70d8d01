"""Low-level netlink and namespace helpers of the lab network (pyroute2).

pyroute2 0.9 is asyncio-native: `AsyncIPRoute` is its core and the synchronous `IPRoute` is a
wrapper that runs an AsyncIPRoute on a private event loop. So netlink requests here are awaited
directly on the caller's loop. Two things in pyroute2 stay blocking and are handled explicitly:
creating a namespace (`netns.create` forks a helper that unshares) runs in a worker thread; opening
a netlink socket inside a namespace forks a short-lived helper that setns()es and passes the
socket back (a few milliseconds, once per `rtnl(netns)` block).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from ferry.lab.net_plan import TbfParams

NETNS_DIR = Path(netns.NETNS_RUN_DIR)
TC_H_ROOT = 0xFFFFFFFF
IFF_UP = 0x1


class LabNetError(RuntimeError):
    """The lab network could not be built, changed or inspected."""


@dataclass(frozen=True)
class LinkInfo:
    name: str
    kind: str | None
    up: bool
    master: str | None
    addresses: list[str] = field(default_factory=list)
    tbf_mbit: float | None = None


@contextlib.asynccontextmanager
async def rtnl(ns: str | None = None) -> AsyncIterator[Any]:
    """An rtnetlink handle for the current namespace, or for the existing namespace `ns`.

    `flags=0`: never create `ns` as a side effect (pyroute2's default is O_CREAT).
    `groups=0`: no multicast subscriptions; these handles only make requests.
    """
    ipr = AsyncIPRoute(groups=0) if ns is None else AsyncIPRoute(netns=ns, flags=0, groups=0)
    try:
        yield ipr
    finally:
        ipr.close()


@contextlib.contextmanager
def ignore_codes(*codes: int) -> Iterator[None]:
    """Suppress a NetlinkError/OSError with one of `codes` (EEXIST on add, ENODEV on del...)."""
    try:
        yield
    except NetlinkError as exc:
        if exc.code not in codes:
            raise
    except OSError as exc:
        if exc.errno not in codes:
            raise


async def link_index(ipr: Any, name: str) -> int | None:
    found = await ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


async def require_link(ipr: Any, name: str, where: str = "root namespace") -> int:
    index = await link_index(ipr, name)
    if index is None:
        raise LabNetError(f"{name} does not exist in the {where}")
    return index


async def ensure_bridge(ipr: Any, name: str, mac: str | None = None) -> int:
    """Create bridge `name` unless it exists (STP off: ports forward at once), fix its MAC if
    given, bring it up."""
    index = await link_index(ipr, name)
    if index is None:
        with ignore_codes(errno.EEXIST):
            await ipr.link("add", ifname=name, kind="bridge")
        index = await require_link(ipr, name)
    if mac is not None:
        await ipr.link("set", index=index, address=mac)
    await ipr.link("set", index=index, state="up")
    return index


async def ensure_veth(ipr: Any, name: str, peer: str, peer_ns: str) -> int:
    """Create veth `name` (here) with its peer `peer` inside namespace `peer_ns`, unless `name`
    exists already. Returns the index of `name`."""
    index = await link_index(ipr, name)
    if index is None:
        await ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_ns})
        index = await require_link(ipr, name)
    return index


async def ensure_addr(ipr: Any, index: int, address: str, prefixlen: int) -> None:
    with ignore_codes(errno.EEXIST):
        await ipr.addr("add", index=index, address=address, prefixlen=prefixlen)


async def set_tbf(ipr: Any, index: int, tbf: TbfParams | None) -> None:
    """Make a tbf the root qdisc of `index` (replace: idempotent), or remove shaping."""
    if tbf is None:
        with ignore_codes(errno.ENOENT, errno.EINVAL):
            await ipr.tc("del", index=index, parent=TC_H_ROOT)
        return
    await ipr.tc(
        "replace",
        "tbf",
        index,
        rate=tbf.rate_bytes,
        burst=tbf.burst_bytes,
        latency=f"{tbf.latency_ms}ms",
    )


async def describe_links(ipr: Any, name_prefix: str = "") -> list[LinkInfo]:
    """Links whose name starts with `name_prefix`, with IPv4 addresses and root tbf rate."""
    links = [msg async for msg in await ipr.link("dump")]
    names = {int(msg["index"]): str(msg.get("ifname")) for msg in links}
    addresses: dict[int, list[str]] = {}
    async for msg in await ipr.addr("dump", family=socket.AF_INET):
        addresses.setdefault(int(msg["index"]), []).append(
            f"{msg.get('address')}/{msg['prefixlen']}"
        )
    rates: dict[int, float] = {}
    async for msg in await ipr.tc("dump"):
        if msg.get("kind") == "tbf" and msg["parent"] == TC_H_ROOT:
            parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
            rates[int(msg["index"])] = parms["rate"] * 8 / 1_000_000
    result = []
    for msg in links:
        index = int(msg["index"])
        if not names[index].startswith(name_prefix):
            continue
        master = msg.get("master")
        result.append(
            LinkInfo(
                name=names[index],
                kind=msg.get(("linkinfo", "kind")),
                up=bool(msg["flags"] & IFF_UP),
                master=names.get(int(master)) if master else None,
                addresses=addresses.get(index, []),
                tbf_mbit=rates.get(index),
            )
        )
    return result


# -- namespaces --------------------------------------------------------------------------------


def list_namespaces(name_prefix: str) -> list[str]:
    try:
        entries = [entry.name for entry in NETNS_DIR.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if e.startswith(name_prefix))


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_namespace(name: str) -> None:
    """Blocking: create the named namespace (run it in a thread)."""
    netns.create(name)


def remove_namespace(name: str) -> None:
    """Blocking: unmount and unlink the namespace's name (a half-created one too)."""
    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)


def namespace_pids(names: list[str]) -> dict[str, list[int]]:
    """Processes in each of the named namespaces (what `ip netns pids` does), one /proc scan."""
    wanted: dict[tuple[int, int], str] = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            st = (NETNS_DIR / name).stat()
            wanted[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {name: [] for name in names}
    if not wanted:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = (entry / "ns" / "net").stat()
        except OSError:
            continue
        owner = wanted.get((st.st_dev, st.st_ino))
        if owner is not None:
            found[owner].append(int(entry.name))
    return {name: sorted(pids) for name, pids in found.items()}


def kill_namespace_processes(names: list[str], grace: float = 3.0) -> list[int]:
    """Blocking: SIGTERM every process in the named namespaces, SIGKILL what survives `grace`
    seconds. Never signals the calling process. Returns the pids that were signalled."""
    victims = sorted(
        pid for pids in namespace_pids(names).values() for pid in pids if pid != os.getpid()
    )
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = set(victims)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _alive(pid)}
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie holds no namespace any more
