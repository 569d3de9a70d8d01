"""What the scheduler sees: resources, hosts as candidates, and requests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum


@dataclass(frozen=True)
class Resources:
    vcpus: int
    ram_mb: int
    disk_gb: int

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.vcpus + other.vcpus, self.ram_mb + other.ram_mb, self.disk_gb + other.disk_gb
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.vcpus - other.vcpus, self.ram_mb - other.ram_mb, self.disk_gb - other.disk_gb
        )

    def share_of(self, capacity: Resources) -> float:
        """The dominant share: the largest fraction of `capacity` this takes of any resource."""
        return max(
            _fraction(self.vcpus, capacity.vcpus),
            _fraction(self.ram_mb, capacity.ram_mb),
            _fraction(self.disk_gb, capacity.disk_gb),
        )


NOTHING = Resources(0, 0, 0)


def _fraction(part: int, whole: int) -> float:
    if whole > 0:
        return part / whole
    return 0.0 if part <= 0 else float("inf")


class GroupPolicy(StrEnum):
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


@dataclass(frozen=True)
class Group:
    """The server group of the instance being placed. `placed`: some other member already runs
    somewhere (hard affinity then binds the instance to the hosts holding members)."""

    name: str
    policy: GroupPolicy
    placed: bool = False


@dataclass(frozen=True)
class Traits:
    """What must match for a running guest to move: pinned CPU model, machine type and
    accelerator (KVM and TCG guests do not migrate into each other), and a QEMU at least as new
    as the source's."""

    cpu_model: str
    machine_type: str
    qemu_version: str
    accelerator: str = "tcg"


@dataclass(frozen=True)
class Candidate:
    """A host as the scheduler sees it: capacity after ratios and reservations, what is claimed
    on it, and what it offers. `members` counts the instances of each server group it holds;
    `inbound` the migrations in flight towards it."""

    name: str
    up: bool
    enabled: bool
    in_service: bool
    capacity: Resources
    used: Resources
    networks: frozenset[str] = field(default_factory=frozenset)
    traits: Traits | None = None
    inbound: int = 0
    members: Mapping[str, int] = field(default_factory=dict)
    storage_pool: str = ""  # the shared pool of its instance storage; "": its own (local)

    def free(self) -> Resources:
        return self.capacity - self.used

    def utilization(self) -> float:
        return self.used.share_of(self.capacity)

    def claimed(self, need: Resources, group: str | None = None, count: int = 1) -> Candidate:
        """This host after `count` more instances needing `need` in total land on it."""
        members = self.members
        if group is not None:
            members = {**members, group: members.get(group, 0) + count}
        return replace(self, used=self.used + need, members=members, inbound=self.inbound + count)

    def released(self, need: Resources, group: str | None = None, count: int = 1) -> Candidate:
        members = self.members
        if group is not None:
            members = {**members, group: members.get(group, 0) - count}
        return replace(self, used=self.used - need, members=members, inbound=self.inbound - count)


@dataclass(frozen=True)
class Request:
    """One placement: resources, the networks its ports need (so its addresses survive), its
    server group, and for a running guest the traits of the host it leaves."""

    need: Resources
    networks: frozenset[str] = field(default_factory=frozenset)
    group: Group | None = None
    traits: Traits | None = None
    count: int = 1  # instances in the request (an affinity bundle moves as one)
    # Where the disk of an instance that moves is: None, no disk to reach; "", the local
    # storage of the host it leaves; else the shared pool the destination must be in.
    disk_pool: str | None = None
