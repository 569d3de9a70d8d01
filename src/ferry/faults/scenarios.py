"""Fault scenarios: which fault, at which point of a drain, on which cluster, all derived from one
seed so that any run can be replayed exactly (`ferry faults run --runs 1 --seed SEED`).

A run's seed picks its fault kind by rotation over the kinds asked for (`seed % len(kinds)`),
so any `len(kinds)` consecutive seeds cover every kind; everything else (the phase, the
instances, the limits, how long a killed process or a cut link stays down, which migration is
hit, whether the hosts keep instance disks on shared or local storage) comes from a random
generator seeded with it. The phase is drawn among the phases before the mirror existed and
then, with the chance of one phase more, turned into the mirror phase; the storage is drawn
last: so a seed keeps the scenario it had before, but for those two fields.

Storage: `shared` (one pool: a move takes no disk along) or `local` (each host its own: a move
copies the disk first, the mirror phase, then the RAM). A mirror-phase scenario is always on
local storage; the others are on local storage on `LOCAL_SHARE` of the seeds, so every fault
kind at every phase also runs while disks move.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    CONTROLLER_KILL = "controller-kill"  # SIGKILL the controller, then start it again
    SOURCE_AGENT_KILL = "source-agent-kill"  # SIGKILL the drained host's agent, then restart
    DEST_AGENT_KILL = "dest-agent-kill"  # SIGKILL a destination's agent, then restart
    SOURCE_GUEST_KILL = "source-guest-kill"  # the migrating guest's QEMU dies on the source
    DEST_GUEST_KILL = "dest-guest-kill"  # ... on the destination (the incoming one, or after)
    LINK_CUT = "link-cut"  # the drained host's migration link goes down, then up again


class Phase(StrEnum):
    FANOUT = "fan-out"  # right after entering maintenance: migrations being queued, scheduled
    PREPARE = "prepare"  # a migration's destination is prepared, its stream not started yet
    TRANSFER = "transfer"  # a migration's RAM streams (running; a local disk is in sync)
    SWITCHOVER = "switchover"  # a stream completed at the source; the move is being finished
    MIRROR = "mirror"  # a migration's local disk is being copied, not yet in sync (running)


class Storage(StrEnum):
    SHARED = "shared"  # one pool every host reaches: the disk stays where it is
    LOCAL = "local"  # each host's own: a move copies the disk to its destination


ALL_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)
# Before any migration has a destination there is no destination guest to kill. The mirror
# phase is drawn apart (see the module's docstring), after these.
PHASES: dict[FaultKind, tuple[Phase, ...]] = {
    kind: tuple(
        p
        for p in Phase
        if p is not Phase.MIRROR and not (kind is FaultKind.DEST_GUEST_KILL and p is Phase.FANOUT)
    )
    for kind in FaultKind
}
LOCAL_SHARE = 0.4  # of the scenarios at other phases than the mirror, on local storage


@dataclass(frozen=True)
class Scenario:
    seed: int
    kind: FaultKind
    phase: Phase
    instances: int  # on each drained host
    drains: int  # hosts drained at once (the fault hits the first one's migrations)
    max_outbound: int  # the drains' streams per source
    bandwidth_mib: int  # the migrations' bandwidth cap (128 MiB guests)
    down_s: float  # how long a killed process stays down, or the link stays cut
    pick: int  # which migration reaching the phase is hit (0: the first one)
    delay_s: float  # at fan-out: after entering maintenance, before the fault
    storage: Storage = Storage.SHARED  # where the hosts keep instance disks

    @property
    def hosts(self) -> int:
        """Drained hosts plus two to receive their instances."""
        return self.drains + 2

    @property
    def local(self) -> bool:
        return self.storage is Storage.LOCAL

    def describe(self) -> str:
        return f"{self.kind} at {self.phase}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scenario(
    seed: int, kinds: tuple[FaultKind, ...] = ALL_KINDS, phases: tuple[Phase, ...] | None = None
) -> Scenario:
    """The scenario of `seed` among `kinds`; with `phases`, one of those phases (a drawn phase
    that is not among them is drawn again among them, from the same generator, so the run
    stays a function of its seed, its kinds and its phases)."""
    if not kinds:
        raise ValueError("no fault kinds to choose from")
    rng = random.Random(seed)
    drawn = _draw(seed, kinds, rng)
    if phases is None or drawn.phase in phases:
        return drawn
    allowed = [p for p in phases if p is Phase.MIRROR or p in PHASES[drawn.kind]]
    if not allowed:
        raise ValueError(f"{drawn.kind} cannot be injected at {', '.join(phases)}")
    phase = allowed[rng.randrange(len(allowed))]
    storage = Storage.LOCAL if phase is Phase.MIRROR else drawn.storage
    return replace(drawn, phase=phase, storage=storage)


def _draw(seed: int, kinds: tuple[FaultKind, ...], rng: random.Random) -> Scenario:
    kind = kinds[seed % len(kinds)]
    drawn = Scenario(
        seed=seed,
        kind=kind,
        phase=rng.choice(PHASES[kind]),
        instances=rng.randint(3, 5),
        drains=rng.choice((1, 1, 2)),
        max_outbound=rng.choice((1, 2)),
        bandwidth_mib=rng.choice((64, 128, 256)),
        down_s=round(rng.uniform(0.3, 5.0), 2),
        pick=rng.choice((0, 0, 1)),
        delay_s=round(rng.uniform(0.0, 0.3), 2),
    )
    if rng.random() < 1 / (len(PHASES[kind]) + 1):
        return replace(drawn, phase=Phase.MIRROR, storage=Storage.LOCAL)
    local = rng.random() < LOCAL_SHARE
    return replace(drawn, storage=Storage.LOCAL if local else Storage.SHARED)


def scenarios(
    first_seed: int,
    runs: int,
    kinds: tuple[FaultKind, ...] = ALL_KINDS,
    phases: tuple[Phase, ...] | None = None,
) -> list[Scenario]:
    """`runs` scenarios with consecutive seeds from `first_seed`."""
    return [scenario(first_seed + n, kinds, phases) for n in range(runs)]
