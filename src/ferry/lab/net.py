"""The network of `ferry lab`: hosts as network namespaces on two fabrics in the root namespace.

    root ns:  <p>-mgmt (198.18.0.1/16)              <p>-inst (198.19.0.1/16)
               |  <p>-m1 [tbf]   |  <p>-m2 [tbf]      |  <p>-i1         |  <p>-i2
    <p>-h1:   mgmt0 198.18.0.11 [tbf]              inst0 -- br-inst (guest taps)
    <p>-h2:   mgmt0 198.18.0.12 [tbf]              inst0 -- br-inst (guest taps)

Management (agent <-> controller, and migration streams) runs over <p>-mgmt. Each host's link is
shaped in both directions with a tbf root qdisc: on mgmt0 (host egress) and on the root end
<p>-m<i> (host ingress), so host-to-host traffic crosses two token buckets like a real NIC pair.
All br-inst bridges join one L2 segment through <p>-inst, so an instance keeps its 198.19.x.y
address on any host; after a migration QEMU's RARP announcements re-teach the bridges its port.
Host namespaces get no default route: nothing leaves the machine. See net_plan for the names and
addresses; every name starts with `<prefix>-`, and `teardown(prefix)` finds a lab by names alone.

All functions are async; see net_ops for how pyroute2 (0.9, asyncio-native) is driven.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any

from ferry.lab import net_ops as ops
from ferry.lab.net_ops import LabNetError, LinkInfo, rtnl
from ferry.lab.net_plan import (
    HOST_INST_BRIDGE,
    HOST_INST_UPLINK,
    HOST_MGMT_IF,
    LAB_RANGE,
    LabNetPlan,
    LabPlanError,
    TbfParams,
    lab_of_bridge,
    name_prefix,
    tbf_params,
)

__all__ = [
    "LabNetError",
    "LabNetPlan",
    "LabNetStatus",
    "LabPlanError",
    "LinkInfo",
    "NamespaceInfo",
    "TbfParams",
    "TeardownReport",
    "add_host",
    "create_fabric",
    "create_lab",
    "remove_host",
    "set_link_speed",
    "status",
    "teardown",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamespaceInfo:
    name: str
    pids: list[int]
    links: list[LinkInfo]


@dataclass(frozen=True)
class LabNetStatus:
    prefix: str
    root_links: list[LinkInfo] = field(default_factory=list)
    namespaces: list[NamespaceInfo] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.root_links and not self.namespaces


@dataclass(frozen=True)
class TeardownReport:
    prefix: str
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)


# -- build -------------------------------------------------------------------------------------


async def create_fabric(plan: LabNetPlan) -> None:
    """Create (or repair) the two fabric bridges and the root namespace's addresses on them.

    Refuses when another interface of the root namespace already has an address in
    198.18.0.0/15 (another lab, or a collision with a real network)."""
    async with rtnl() as ipr:
        await _check_range_free(ipr, plan.name_prefix)
        mgmt = await ops.ensure_bridge(ipr, plan.mgmt_bridge, plan.mgmt_bridge_mac)
        await ops.ensure_addr(ipr, mgmt, plan.controller_ip, plan.mgmt_prefixlen)
        inst = await ops.ensure_bridge(ipr, plan.inst_bridge, plan.inst_bridge_mac)
        await ops.ensure_addr(ipr, inst, plan.inst_root_ip, plan.inst_prefixlen)


async def _check_range_free(ipr: Any, ours: str) -> None:
    for link in await ops.describe_links(ipr):
        if link.name.startswith(ours):
            continue
        for cidr in link.addresses:
            if ipaddress.IPv4Interface(cidr).ip in LAB_RANGE:
                holder = await asyncio.to_thread(_holder, link.name)
                raise LabNetError(
                    f"{cidr} on {link.name} is in the lab range {LAB_RANGE}: {holder}"
                )


def _holder(link: str) -> str:
    """Who holds the range through `link`: a lab left behind with no process in its
    namespaces (a killed run) is named, with the command that removes it."""
    prefix = lab_of_bridge(link)
    if prefix is not None:
        names = ops.list_namespaces(f"{prefix}-")
        if not any(ops.namespace_pids(names).values()):
            return (
                f"lab {prefix!r} was left behind (no process runs in its namespaces); "
                f"`ferry lab down --prefix {prefix}` removes it"
            )
    return "another lab is running (tear it down first) or the range is in use on this machine"


async def add_host(plan: LabNetPlan, i: int) -> None:
    """Create (or repair) host i: its namespace, both veth pairs, addresses, br-inst, shaping.

    Idempotent; needs `create_fabric(plan)` first."""
    ns = plan.host_ns(i)
    async with rtnl() as ipr:
        mgmt_bridge = await ops.require_link(ipr, plan.mgmt_bridge)
        inst_bridge = await ops.require_link(ipr, plan.inst_bridge)
        if not ops.namespace_exists(ns):
            await asyncio.to_thread(ops.create_namespace, ns)
        mgmt = await ops.ensure_veth(ipr, plan.mgmt_root_veth(i), HOST_MGMT_IF, ns)
        await ipr.link("set", index=mgmt, master=mgmt_bridge, state="up")
        await ops.set_tbf(ipr, mgmt, plan.tbf)
        inst = await ops.ensure_veth(ipr, plan.inst_root_veth(i), HOST_INST_UPLINK, ns)
        await ipr.link("set", index=inst, master=inst_bridge, state="up")
    where = f"namespace {ns} (tear the lab down and build it again)"
    async with rtnl(ns) as nsr:
        await nsr.link("set", index=await ops.require_link(nsr, "lo", where), state="up")
        mgmt_if = await ops.require_link(nsr, HOST_MGMT_IF, where)
        await ops.ensure_addr(nsr, mgmt_if, plan.mgmt_ip(i), plan.mgmt_prefixlen)
        await nsr.link("set", index=mgmt_if, state="up")
        await ops.set_tbf(nsr, mgmt_if, plan.tbf)
        br_inst = await ops.ensure_bridge(nsr, HOST_INST_BRIDGE)
        uplink = await ops.require_link(nsr, HOST_INST_UPLINK, where)
        await nsr.link("set", index=uplink, master=br_inst, state="up")


async def create_lab(plan: LabNetPlan, *, concurrency: int = 4) -> None:
    """The fabric and every host of `plan`; idempotent, so it also repairs a partial lab.

    Hosts are added `concurrency` at a time. If it fails while building a lab that did not
    exist before, everything of the prefix is removed again; a failed repair of an existing lab
    leaves it as it was (its agents may be running)."""
    start = plan.name_prefix
    async with rtnl() as ipr:
        fresh = not ops.list_namespaces(start) and not await ops.describe_links(ipr, start)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def add(i: int) -> None:
        async with limit:
            await add_host(plan, i)

    tasks: list[asyncio.Task[None]] = []
    try:
        await create_fabric(plan)
        await add_host(plan, 1)  # alone: the first namespace may have to set up /run/netns
        tasks = [asyncio.create_task(add(i)) for i in plan.host_indices if i > 1]
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if fresh:
            log.exception("building lab network %s failed; tearing it down", plan.prefix)
            await asyncio.shield(teardown(plan.prefix))
        raise


async def set_link_speed(plan: LabNetPlan, link_mbit: int | None) -> None:
    """Reshape every host link of a running lab, both directions (None: unshaped)."""
    tbf = None if link_mbit is None else tbf_params(link_mbit)
    async with rtnl() as ipr:
        for i in plan.host_indices:
            await ops.set_tbf(ipr, await ops.require_link(ipr, plan.mgmt_root_veth(i)), tbf)
    for i in plan.host_indices:
        async with rtnl(plan.host_ns(i)) as nsr:
            await ops.set_tbf(nsr, await ops.require_link(nsr, HOST_MGMT_IF), tbf)


# -- remove ------------------------------------------------------------------------------------


async def remove_host(plan: LabNetPlan, i: int, *, kill_processes: bool = True) -> list[int]:
    """Remove host i (processes in its namespace first, when asked). Idempotent.
    Returns the pids that were signalled."""
    ns = plan.host_ns(i)
    killed = await _kill([ns]) if kill_processes else []
    async with rtnl() as ipr:
        for name in (plan.mgmt_root_veth(i), plan.inst_root_veth(i)):
            await _delete_link(ipr, name)
    await asyncio.to_thread(ops.remove_namespace, ns)
    return killed


async def teardown(prefix: str, *, kill_processes: bool = True) -> TeardownReport:
    """Remove every namespace and root-namespace link named `<prefix>-*`, and nothing else.

    Needs no state: names are the state. Idempotent. Processes inside those namespaces (agents,
    QEMU, test helpers) are terminated first unless `kill_processes` is False; a namespace that
    still has processes stays alive, unnamed, until they exit (its root-side veths are deleted
    all the same, so it is cut off from the fabrics)."""
    start = name_prefix(prefix)
    namespaces = ops.list_namespaces(start)
    killed = await _kill(namespaces) if kill_processes else []
    busy = any((await asyncio.to_thread(ops.namespace_pids, namespaces)).values())
    async with rtnl() as ipr:
        links = await ops.describe_links(ipr, start)
        for ns in namespaces:
            await asyncio.to_thread(ops.remove_namespace, ns)
        if namespaces and not busy:
            # The kernel destroys an empty namespace with all its veths in one batch, much
            # faster than deleting veths one by one (each waits for an RCU grace period).
            await _wait_for_veths_gone(ipr, start)
        # what is left: bridges, veths of namespaces that are still busy or already gone
        for link in sorted(await ops.describe_links(ipr, start), key=lambda x: x.kind == "bridge"):
            await _delete_link(ipr, link.name)
        leftovers = [link.name for link in await ops.describe_links(ipr, start)]
    if leftovers or ops.list_namespaces(start):
        raise LabNetError(f"teardown of {prefix!r} left {leftovers} {ops.list_namespaces(start)}")
    return TeardownReport(prefix, namespaces, [link.name for link in links], killed)


async def _kill(namespaces: list[str]) -> list[int]:
    return await asyncio.to_thread(ops.kill_namespace_processes, namespaces)


async def _wait_for_veths_gone(ipr: Any, start: str, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        links = await ops.describe_links(ipr, start)
        if not any(link.kind == "veth" for link in links):
            return
        await asyncio.sleep(0.05)


async def _delete_link(ipr: Any, name: str) -> bool:
    index = await ops.link_index(ipr, name)
    if index is None:
        return False
    with ops.ignore_codes(errno.ENODEV):
        await ipr.link("del", index=index)
    return True


# -- inspect -----------------------------------------------------------------------------------


async def status(prefix: str) -> LabNetStatus:
    """What exists of lab `prefix`: root links and namespaces (with their links and pids)."""
    start = name_prefix(prefix)
    async with rtnl() as ipr:
        root_links = await ops.describe_links(ipr, start)
    namespaces = []
    for ns in ops.list_namespaces(start):
        links: list[LinkInfo] = []
        with contextlib.suppress(OSError, LabNetError):  # a namespace being removed right now
            async with rtnl(ns) as nsr:
                links = await ops.describe_links(nsr)
        pids = (await asyncio.to_thread(ops.namespace_pids, [ns]))[ns]
        namespaces.append(NamespaceInfo(name=ns, pids=pids, links=links))
    return LabNetStatus(prefix=prefix, root_links=root_links, namespaces=namespaces)
