"""Injecting one fault into a fake cluster, and undoing what an operator or the machine would undo
(a killed process is started again, a cut link comes back). Guest deaths and cut links go
through the fake driver's fault hooks (agent/drivers/fake_faults.py), with the effects a real
host would see on the other end:

- the source's QEMU dies while it streams: the destination's incoming QEMU loses its stream and
  exits (QEMU 7.2 ends a failed incoming migration); while only a local disk was being copied
  (`mirroring`: the RAM stream not started) the destination loses its NBD client alone and
  waits on; once the source handed over, the destination has the whole guest and runs it
  (`arrive`: its report says so, as QEMU's does);
- the destination's incoming QEMU dies: the source's stream or disk mirror fails (or, not
  started yet, fails at connect) and the source keeps running; once the source handed over,
  the guest dies with the destination;
- the link is cut on the drained host: its streams stall without failing (TCP over a dead
  link), the controller's no-progress timeout decides, and streams not aborted by then go on
  once the link is up.

Real hosts implement the same `Injector` protocol with real means (SIGKILL of a QEMU pid, `ip
link set down`), and the runner stays the same.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from ferry.faults.cluster import Cluster, ClusterError
from ferry.faults.scenarios import FaultKind

IN_PROGRESS = ("setup", "active", "device")


class FaultMissed(ClusterError):
    """The moment passed before the fault could hit (the drain ended before the phase came, or
    the guest to kill was already gone): no fault was injected."""


@dataclass(frozen=True)
class Target:
    """What a fault hits: the drained host and the migration (or planned move) that reached the
    phase."""

    source: str
    instance: str
    instance_id: str
    destination: str | None = None
    migration_id: str | None = None
    state: str | None = None  # the migration's state when it was picked

    def describe(self) -> str:
        move = f"{self.instance} {self.source} -> {self.destination or '?'}"
        return f"{move} ({self.state})" if self.state else f"{move} (planned)"


@dataclass(frozen=True)
class Injected:
    """What a fault did, and whether the instance it hit must survive it: it must unless the
    fault killed the only copy of its guest (a source that had not handed it over yet, or a
    destination that had it whole)."""

    said: str
    spares_target: bool = True


class Injector(Protocol):
    async def inject(self, kind: FaultKind, target: Target, down_s: float) -> Injected:
        """Cause the fault, undo what is undone in life after `down_s`; say what happened."""


class ProcessInjector:
    """Kills of Ferry's own processes (the controller, an agent), the same on fake and real
    hosts; guest deaths and link cuts are each backend's own (`_kill_guest`, `_cut_link`)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def inject(self, kind: FaultKind, target: Target, down_s: float) -> Injected:
        if kind is FaultKind.LINK_CUT:
            return Injected(await self._cut_link(target.source, down_s))
        if kind in (FaultKind.SOURCE_GUEST_KILL, FaultKind.DEST_GUEST_KILL):
            return await self._kill_guest(kind, target)
        return Injected(await self._kill_process(kind, target, down_s))

    async def _cut_link(self, host: str, down_s: float) -> str:
        raise NotImplementedError

    async def _kill_guest(self, kind: FaultKind, target: Target) -> Injected:
        raise NotImplementedError

    async def _kill_process(self, kind: FaultKind, target: Target, down_s: float) -> str:
        if kind is FaultKind.CONTROLLER_KILL:
            await self.cluster.kill_controller()
            await asyncio.sleep(down_s)
            await self.cluster.start_controller()
            return f"SIGKILLed the controller; started again after {down_s:g}s"
        host = target_host(kind, target)
        await self.cluster.kill_agent(host)
        await asyncio.sleep(down_s)
        await self.cluster.start_agent(host)
        return f"SIGKILLed the agent of {host}; started again after {down_s:g}s"


class FakeInjector(ProcessInjector):
    """Guest deaths and link cuts through the fake driver's fault hooks."""

    async def _kill_guest(self, kind: FaultKind, target: Target) -> Injected:
        await self._await_copy(
            target_host(kind, target), target.instance_id
        )  # a target may be coming
        async with self.cluster.controller_held():  # a death and its echo, as one moment
            if kind is FaultKind.SOURCE_GUEST_KILL:
                return await self._kill_source_guest(target)
            return await self._kill_destination_guest(target)

    async def _kill_source_guest(self, target: Target) -> Injected:
        crash = await self._crash(target.source, target.instance_id)
        stream, dest = crash["stream"], target.destination
        said = f"{target.instance}'s QEMU on {target.source} died (its stream: {stream})"
        if dest is not None and stream in IN_PROGRESS:
            await self._peer_lost(dest, target.instance_id)
            said += f"; the incoming QEMU on {dest} lost its stream and exited"
        elif dest is not None and stream == "completed":
            await self._fake(dest, "POST", f"/v1/fake/guests/{target.instance_id}/arrive")
            return Injected(f"{said}; {dest} had received it whole and runs it", True)
        return Injected(said, spares_target=False)

    async def _kill_destination_guest(self, target: Target) -> Injected:
        assert target.destination is not None
        crash = await self._crash(target.destination, target.instance_id)
        said = f"{target.instance}'s QEMU on {target.destination} died"
        if not crash["target"]:
            return Injected(f"{said} (it had arrived)", spares_target=False)
        stream = await self._peer_lost(target.source, target.instance_id)
        said += f" (an incoming target); {target.source} lost its peer (its stream: {stream})"
        return Injected(said, spares_target=stream != "completed")

    async def _cut_link(self, host: str, down_s: float) -> str:
        await self._fake(host, "PUT", "/v1/fake/link", json={"up": False})
        await asyncio.sleep(down_s)
        await self._fake(host, "PUT", "/v1/fake/link", json={"up": True})
        return f"cut the migration link of {host} for {down_s:g}s"

    async def _await_copy(self, host: str, instance_id: str, within: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not any(g["id"] == instance_id for g in await self._fake(host, "GET", "/v1/guests")):
            if loop.time() > deadline:
                raise FaultMissed(f"{host} did not hold the guest to kill within {within:g}s")
            await asyncio.sleep(0.05)

    async def _crash(self, host: str, instance_id: str) -> dict[str, Any]:
        """Crash the guest; a copy gone meanwhile (the move went on) means the moment passed."""
        try:
            crash: dict[str, Any] = await self._fake(
                host, "POST", f"/v1/fake/guests/{instance_id}/crash"
            )
        except ClusterError as exc:
            if "is not on this host" in str(exc):
                raise FaultMissed(f"{host} no longer held the guest to kill") from exc
            raise
        return crash

    async def _peer_lost(self, host: str, instance_id: str) -> str:
        """The other end is gone; the status of this end's stream before it learnt so."""
        lost = await self._fake(host, "POST", f"/v1/fake/guests/{instance_id}/peer-lost")
        return str(lost["stream"])

    async def _fake(self, host: str, method: str, path: str, **kwargs: Any) -> Any:
        url = self.cluster.agent_urls[host] + path
        response = await self.cluster.agent_http.request(method, url, **kwargs)
        if response.is_error:
            raise ClusterError(f"{method} {path} on {host}: {response.status_code} {response.text}")
        return response.json() if response.content else None


def target_host(kind: FaultKind, target: Target) -> str:
    """The host a fault of `kind` hits: the drained one, or the target's destination."""
    if kind in (FaultKind.SOURCE_AGENT_KILL, FaultKind.SOURCE_GUEST_KILL, FaultKind.LINK_CUT):
        return target.source
    if target.destination is None:
        raise ClusterError(f"{target.describe()} has no destination to hit")
    return target.destination
