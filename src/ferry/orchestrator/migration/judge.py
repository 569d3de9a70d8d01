"""Where a migrating instance runs, from both ends' answers, and what the reconciler does about
it (pure: tested on its own in tests/unit/orchestrator)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ferry.domain.migration import MigrationState

_S = MigrationState
OWN_POWERS = ("running", "paused")  # a guest that lives on the host, not a migration target
# An incoming migration target whose stream completed: QEMU runs the guest there by itself, and
# the QEMU driver reports it `incoming` (until finish-destination) with this detail, QEMU's
# runstate in parentheses ("migration target (inmigrate)" while the stream is awaited).
ARRIVED_DETAIL = "migration target (running)"


# -- where the instance runs: what each end says, and what follows ---------------------------


@dataclass(frozen=True)
class Sighting:
    """One agent's answer about the instance: its power there (None: no copy at all), or why the
    agent did not answer."""

    host: str
    power: str | None = None
    trouble: str | None = None
    arrived: bool = False  # an incoming target that received the whole guest and runs it

    @property
    def answered(self) -> bool:
        return self.trouble is None

    @property
    def runs(self) -> bool:
        return self.answered and self.power == "running"

    @property
    def owns(self) -> bool:
        """The host has it as its own guest (finished there), not as a migration target."""
        return self.answered and self.power in OWN_POWERS

    @property
    def lacks(self) -> bool:
        """No usable copy here: none, stopped or crashed."""
        return self.answered and self.power not in (*OWN_POWERS, "incoming")

    def __str__(self) -> str:
        if self.trouble is not None:
            return f"{self.host} did not answer ({self.trouble})"
        if self.power is None:
            return f"{self.host} has no copy"
        if self.arrived:
            return f"{self.host} has it incoming, arrived and running"
        return f"{self.host} has it {self.power}"


class Verdict(StrEnum):
    MOVED = "moved"  # the destination runs it as its own: complete the move
    STAYED = "stayed"  # the source runs it and the move will not finish: unwind
    LOST = "lost"  # neither end runs it
    WAIT = "wait"  # not known (yet): keep asking, the reason visible


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    reason: str


def judge(
    state: MigrationState, source: Sighting, dest: Sighting, waited_s: float, patience_s: float
) -> Finding:
    """What to do with a migration whose stream the source cannot report, from both ends'
    answers. `waited_s` is how long no progress was seen; after `patience_s` a source that runs
    the guest keeps it."""
    seen = f"{source}; {dest}"
    took_over = dest.owns or (dest.arrived and state is not _S.POSTCOPY)
    if took_over:
        if source.runs:
            return Finding(Verdict.WAIT, f"both ends run it, touching neither ({seen})")
        return Finding(Verdict.MOVED, f"the destination took over ({seen})")
    if source.runs:
        if dest.lacks:
            return Finding(Verdict.STAYED, f"the destination holds no incoming copy ({seen})")
        if waited_s > patience_s:
            return Finding(
                Verdict.STAYED,
                f"no progress visible for {waited_s:.0f}s (no_progress_s {patience_s:g}); "
                f"the source keeps it ({seen})",
            )
        return Finding(Verdict.WAIT, f"the stream cannot be seen ({seen})")
    target_lost = dest.lacks or (dest.answered and state is not _S.POSTCOPY)
    if source.lacks and target_lost:
        return Finding(Verdict.LOST, f"neither end runs it ({seen})")
    if source.owns and dest.lacks and waited_s > patience_s:
        # Handed over (a paused source), and the destination has no live copy: the guest died
        # there. A source paused in the switchover resumes by itself when its stream fails,
        # so this is judged only once no progress was seen for the policy's patience.
        return Finding(
            Verdict.LOST,
            f"the destination lost it after the hand-over; the source holds only a paused copy "
            f"({seen})",
        )
    return Finding(Verdict.WAIT, f"cannot tell where it runs ({seen})")
