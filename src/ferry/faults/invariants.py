"""What must hold once a cluster has been left to settle after a fault, checked on a snapshot of
the controller's records and of what each host's agent says it runs. Pure: `collect.py` takes
the snapshot; tests build inconsistent ones by hand.

- placement: an instance the records call running runs on exactly one host, the one its record
  names; one that does not run (error, stopped) runs nowhere;
- copies: no host holds any copy of an instance (running, paused, stopped, an incoming target)
  except the instance's own host: anything else is a leaked process, tap and run directory;
- claims: each live instance holds exactly one allocation, on its host and tagged with no
  migration; none is left for a finished migration or for an instance that is gone, and no
  claim sits on a host the instance is not on;
- drains: every drain has ended (completed, failed or cancelled) and its host's maintenance
  state agrees (in_maintenance, drain_failed, in_service);
- migrations: none is left in a non-terminal state, and none still marks a stale copy
  (`leftover`) while both agents answer;
- agents: each host's agent answers (otherwise its reality cannot be checked);
- survivors: an instance whose guest kept a live copy through the fault (every one but the
  one whose only copy a guest kill took) is still running;
- disks, intact and in exactly one place: every live instance with a root disk has it on its
  host's storage; no disk is open (by a running, paused or incoming copy) on two hosts at once;
  no disk is left of an instance that is gone, nor on a host's local storage that the instance
  does not live on (a destination's partial copy after an abort, a source's disk after a move);
  and the disk on its host is intact: it passes its check (`DiskReading.problem`: a fake disk's
  record reads, a real one passes `qemu-img check`) and, where its content can be compared,
  holds what it held before the drain (`DiskReading.digest` against `Snapshot.disk_before`:
  a copy that never completed, was cut short or was made afresh is told by its content).

Real hosts add two checks through optional probes (see `Probes` in collect.py): each running
instance's IP answers, and no QEMU process or tap exists that belongs to no instance of the host.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

ACTIVE_MIGRATION = frozenset(
    {"queued", "scheduled", "preparing", "running", "postcopy", "switching"}
)
DRAIN_ENDED = frozenset({"completed", "failed", "cancelled"})
DRAIN_HOST_STATE = {
    "running": "draining",
    "completed": "in_maintenance",
    "failed": "drain_failed",
    "cancelled": "in_service",
}
GONE = frozenset({"deleted"})


class Kind(StrEnum):
    AGENT = "agent-unreachable"
    LOST = "instance-lost"
    PLACEMENT = "placement"
    STRAY_COPY = "stray-copy"
    CLAIMS = "claims"
    DRAIN = "drain-not-ended"
    MAINTENANCE = "maintenance-mismatch"
    MIGRATION = "migration-not-ended"
    LEFTOVER = "leftover"
    UNREACHABLE_IP = "ip-unreachable"
    LEAK = "leak"
    DISK_LOST = "disk-lost"
    DISK_TWICE = "disk-open-twice"
    DISK_LEAK = "disk-leak"
    DISK_CORRUPT = "disk-corrupt"


@dataclass(frozen=True)
class Violation:
    kind: Kind
    subject: str  # the instance, host, drain or migration concerned
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass(frozen=True)
class InstanceRecord:
    id: str
    name: str
    state: str
    host: str | None
    vcpus: int = 1
    ram_mb: int = 128
    disk_gb: int = 0
    ips: tuple[str, ...] = ()
    image: str | None = None  # it has a root disk made from this image


@dataclass(frozen=True)
class HostRecord:
    name: str
    maintenance: str = "in_service"
    liveness: str = "up"
    used: tuple[int, int, int] | None = None  # vCPU, RAM MiB, disk GiB claimed (API totals)


@dataclass(frozen=True)
class DrainRecord:
    id: str
    host: str
    state: str
    error: str | None = None


@dataclass(frozen=True)
class MigrationRecord:
    id: str
    instance_id: str
    instance: str
    source: str
    destination: str | None
    state: str
    leftover: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Claim:
    instance_id: str
    host: str
    migration_id: str | None = None


@dataclass(frozen=True)
class GuestCopy:
    """One guest as a host's agent reports it."""

    instance_id: str
    name: str
    power: str


@dataclass(frozen=True)
class HostDisks:
    """The instance disks on one host's storage, as its agent lists them."""

    kind: str  # local or shared
    pool: str
    instance_ids: frozenset[str]


@dataclass(frozen=True)
class DiskReading:
    """An instance's disk on one host, read there: a digest of its content where a comparison
    means something (None: its guest writes to it, as real guests do), and what its check
    found wrong (None: it passes)."""

    digest: str | None = None
    problem: str | None = None


@dataclass
class Snapshot:
    instances: list[InstanceRecord]
    hosts: list[HostRecord]
    drains: list[DrainRecord]  # the latest drain of each host that had one
    migrations: list[MigrationRecord]
    guests: dict[str, list[GuestCopy] | None]  # host -> its guests; None: its agent did not answer
    claims: list[Claim] | None = None  # None: not known, the API's totals per host are checked
    answers: dict[str, bool] | None = None  # instance name -> its IP answers (real hosts)
    must_run: set[str] | None = None  # instances no fault took the only copy of
    leaks: dict[str, list[str]] = field(default_factory=dict)  # host -> leaked processes, taps
    disks: dict[str, HostDisks | None] | None = None  # host -> its storage; None: not collected
    # instance id -> its disk on its host as read now, and the digests read before the drain
    disk_readings: dict[str, DiskReading] = field(default_factory=dict)
    disk_before: dict[str, str] = field(default_factory=dict)

    def live(self) -> list[InstanceRecord]:
        return [i for i in self.instances if i.state not in GONE]


def check(snapshot: Snapshot) -> list[Violation]:
    """Every violation of the invariants in `snapshot`, in a stable order."""
    return [
        *_agents(snapshot),
        *_survivors(snapshot),
        *_placement(snapshot),
        *_stray_copies(snapshot),
        *(_claims(snapshot) if snapshot.claims is not None else _totals(snapshot)),
        *_drains(snapshot),
        *_migrations(snapshot),
        *_reality(snapshot),
        *(_disks(snapshot) if snapshot.disks is not None else ()),
        *(_disks_left(snapshot) if snapshot.disks is not None else ()),
        *_disks_intact(snapshot),
    ]


OPEN = frozenset({"running", "paused", "incoming"})


def _disks(s: Snapshot) -> Iterator[Violation]:
    assert s.disks is not None
    live = {i.id: i for i in s.live()}
    for inst in live.values():
        storage = s.disks.get(inst.host or "")
        if inst.image is not None and storage is not None and inst.id not in storage.instance_ids:
            yield Violation(
                Kind.DISK_LOST,
                inst.name,
                f"the disk of {inst.name} is not on {inst.host}'s storage",
            )
        holders = [
            host
            for host, guests in sorted(s.guests.items())
            if any(g.instance_id == inst.id and g.power in OPEN for g in guests or [])
        ]
        if inst.image is not None and len(holders) > 1:
            yield Violation(
                Kind.DISK_TWICE,
                inst.name,
                f"the disk of {inst.name} is open on {' and '.join(holders)} at once",
            )


def _disks_left(s: Snapshot) -> Iterator[Violation]:
    """Disks of instances that are gone, and copies on local storage the instance left."""
    assert s.disks is not None
    live = {i.id: i for i in s.live()}
    names = {i.id: i.name for i in s.instances}
    for host, storage in sorted(s.disks.items()):
        for instance_id in sorted(storage.instance_ids if storage else ()):
            owner = live.get(instance_id)
            if owner is None:
                name = names.get(instance_id, instance_id)
                yield Violation(
                    Kind.DISK_LEAK, name, f"{host} keeps the disk of {name}, which is gone"
                )
            elif storage is not None and storage.kind == "local" and owner.host != host:
                yield Violation(
                    Kind.DISK_LEAK,
                    owner.name,
                    f"{host} keeps a copy of the disk of {owner.name}, which lives on {owner.host}",
                )


def _disks_intact(s: Snapshot) -> Iterator[Violation]:
    """Each live instance's disk, read on its host, passes its check and holds what it held
    before the drain."""
    for inst in s.live():
        reading = s.disk_readings.get(inst.id)
        if inst.image is None or reading is None:
            continue
        before = s.disk_before.get(inst.id)
        if reading.problem is not None:
            yield Violation(
                Kind.DISK_CORRUPT,
                inst.name,
                f"the disk of {inst.name} on {inst.host} fails its check: {reading.problem}",
            )
        elif before is not None and reading.digest != before:
            yield Violation(
                Kind.DISK_CORRUPT,
                inst.name,
                f"the disk of {inst.name} on {inst.host} does not hold what it held before the "
                f"drain (content {_short(reading.digest)}, before {_short(before)})",
            )


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "unreadable"


def _agents(s: Snapshot) -> Iterator[Violation]:
    for host, guests in sorted(s.guests.items()):
        if guests is None:
            yield Violation(Kind.AGENT, host, f"the agent of {host} does not answer")


def _survivors(s: Snapshot) -> Iterator[Violation]:
    for inst in s.live():
        if s.must_run is not None and inst.name in s.must_run and inst.state != "running":
            yield Violation(
                Kind.LOST,
                inst.name,
                f"{inst.name} is {inst.state} (host {inst.host}), although it kept a live copy "
                f"through the fault",
            )


def _where_running(s: Snapshot) -> dict[str, list[str]]:
    running: dict[str, list[str]] = defaultdict(list)
    for host, guests in sorted(s.guests.items()):
        for guest in guests or []:
            if guest.power == "running":
                running[guest.instance_id].append(host)
    return running


def _placement(s: Snapshot) -> Iterator[Violation]:
    running = _where_running(s)
    answered = {h for h, g in s.guests.items() if g is not None}
    for inst in s.live():
        hosts = running.get(inst.id, [])
        where = f"on {' and '.join(hosts)}" if hosts else "nowhere"
        if inst.state == "running":
            if hosts == [inst.host] or (not hosts and inst.host not in answered):
                continue  # in place, or its host's agent is silent (reported as such)
            yield Violation(
                Kind.PLACEMENT,
                inst.name,
                f"the record of {inst.name} says it runs on {inst.host}, but it runs {where}",
            )
        elif hosts:
            yield Violation(
                Kind.PLACEMENT,
                inst.name,
                f"{inst.name} is {inst.state} by its record (host {inst.host}), but it runs "
                f"{where}",
            )


def _stray_copies(s: Snapshot) -> Iterator[Violation]:
    owners = {i.id: i for i in s.live()}
    for host, guests in sorted(s.guests.items()):
        for guest in guests or []:
            inst = owners.get(guest.instance_id)
            if inst is None:
                yield Violation(
                    Kind.STRAY_COPY,
                    guest.name,
                    f"{host} holds {_a(guest.power)} copy of {guest.name}, an instance that no "
                    "longer exists",
                )
            elif inst.host != host:
                yield Violation(
                    Kind.STRAY_COPY,
                    inst.name,
                    f"{host} holds {_a(guest.power)} copy of {inst.name}, which lives on "
                    f"{inst.host}",
                )
            elif guest.power not in ("running", "stopped", "crashed", "paused"):
                yield Violation(
                    Kind.STRAY_COPY,
                    inst.name,
                    f"{host}, the host of {inst.name}, holds it as {guest.power}",
                )


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _claims(s: Snapshot) -> Iterator[Violation]:
    assert s.claims is not None
    live = {i.id: i for i in s.live()}
    names = {i.id: i.name for i in s.instances}
    finished = {m.id for m in s.migrations if m.state not in ACTIVE_MIGRATION}
    held: dict[str, list[Claim]] = defaultdict(list)
    for claim in s.claims:
        held[claim.instance_id].append(claim)
        name = names.get(claim.instance_id, claim.instance_id)
        if claim.instance_id not in live:
            yield Violation(
                Kind.CLAIMS, name, f"{name} is gone but still claims resources on {claim.host}"
            )
        elif claim.migration_id in finished:
            yield Violation(
                Kind.CLAIMS,
                name,
                f"the claim of {name} on {claim.host} belongs to migration "
                f"{claim.migration_id[:8]}, which has ended",
            )
    for inst in live.values():
        hosts = sorted(c.host for c in held.get(inst.id, []))
        if hosts == [inst.host]:
            continue
        if inst.host is None and not hosts:
            continue
        have = ", ".join(f"{h} x{n}" for h, n in sorted(Counter(hosts).items())) or "none"
        yield Violation(
            Kind.CLAIMS,
            inst.name,
            f"{inst.name} lives on {inst.host} but holds claims on: {have}",
        )


def _totals(s: Snapshot) -> Iterator[Violation]:
    """Without the claims themselves: what each host says is claimed on it must be the sum of
    the instances that live there."""
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for inst in s.live():
        if inst.host is not None:
            total = expected[inst.host]
            total[0] += inst.vcpus
            total[1] += inst.ram_mb
            total[2] += inst.disk_gb
    for host in s.hosts:
        want = tuple(expected[host.name])
        if host.used is not None and host.used != want:
            yield Violation(
                Kind.CLAIMS,
                host.name,
                f"{host.name} has {host.used[0]} vCPU / {host.used[1]} MiB / {host.used[2]} GiB "
                f"claimed, but its instances need {want[0]} / {want[1]} / {want[2]}",
            )


def _drains(s: Snapshot) -> Iterator[Violation]:
    hosts = {h.name: h for h in s.hosts}
    for drain in s.drains:
        host = hosts.get(drain.host)
        if drain.state not in DRAIN_ENDED:
            yield Violation(
                Kind.DRAIN, drain.host, f"the drain of {drain.host} is still {drain.state}"
            )
        want = DRAIN_HOST_STATE.get(drain.state)
        if host is not None and want is not None and host.maintenance != want:
            yield Violation(
                Kind.MAINTENANCE,
                drain.host,
                f"the drain of {drain.host} is {drain.state} but the host is "
                f"{host.maintenance} (expected {want})",
            )
    drained = {d.host for d in s.drains}
    for host in s.hosts:
        if host.maintenance != "in_service" and host.name not in drained:
            yield Violation(
                Kind.MAINTENANCE, host.name, f"{host.name} is {host.maintenance} without a drain"
            )


def _migrations(s: Snapshot) -> Iterator[Violation]:
    for m in s.migrations:
        where = f"{m.source} -> {m.destination or '?'}"
        if m.state in ACTIVE_MIGRATION:
            why = f" ({m.error})" if m.error else ""
            yield Violation(
                Kind.MIGRATION,
                m.id,
                f"migration {m.id[:8]} of {m.instance} ({where}) is still {m.state}{why}",
            )
        if m.leftover is not None:
            yield Violation(
                Kind.LEFTOVER,
                m.id,
                f"migration {m.id[:8]} of {m.instance} ({where}, {m.state}) still marks a stale "
                f"copy on its {m.leftover}: {m.error}",
            )


def _reality(s: Snapshot) -> Iterator[Violation]:
    for name, answers in sorted((s.answers or {}).items()):
        if not answers:
            yield Violation(Kind.UNREACHABLE_IP, name, f"the IP of {name} does not answer")
    for host, leaked in sorted(s.leaks.items()):
        for thing in leaked:
            yield Violation(Kind.LEAK, host, f"{host} has leaked {thing}")
