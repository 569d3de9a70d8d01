"""`judge`: where a migration stands when the source cannot report its stream, from what both
ends say. The rules that keep an instance in exactly one place:
complete only when the destination runs it as its own guest, unwind only when the source runs it,
call it lost only when neither end can have it, and otherwise wait."""

from __future__ import annotations

import pytest

from ferry.domain.migration import MigrationState
from ferry.orchestrator.migration.judge import Sighting, Verdict, judge

RUNNING, POSTCOPY, SWITCHING = (
    MigrationState.RUNNING,
    MigrationState.POSTCOPY,
    MigrationState.SWITCHING,
)
AWAY = "agent at https://h unreachable"


def src(power: str | None = None, trouble: str | None = None) -> Sighting:
    return Sighting("host1", power, trouble)


def dst(power: str | None = None, trouble: str | None = None) -> Sighting:
    return Sighting("host2", power, trouble)


@pytest.mark.parametrize(
    ("state", "source", "dest", "verdict"),
    [
        # the destination took over: whatever the source says, unless it runs it too
        (RUNNING, src(None), dst("running"), Verdict.MOVED),
        (SWITCHING, src("paused"), dst("running"), Verdict.MOVED),
        (POSTCOPY, src(trouble=AWAY), dst("running"), Verdict.MOVED),
        (RUNNING, src("running"), dst("running"), Verdict.WAIT),
        # the source runs it and no target is left: unwind at once
        (RUNNING, src("running"), dst(None), Verdict.STAYED),
        (RUNNING, src("running"), dst("stopped"), Verdict.STAYED),
        # the source runs it, the target waits or cannot say: wait, within patience
        (RUNNING, src("running"), dst("incoming"), Verdict.WAIT),
        (RUNNING, src("running"), dst(trouble=AWAY), Verdict.WAIT),
        # neither end can have it
        (RUNNING, src(None), dst("incoming"), Verdict.LOST),
        (SWITCHING, src("crashed"), dst(None), Verdict.LOST),
        (POSTCOPY, src(None), dst(None), Verdict.LOST),
        # in post-copy an incoming destination runs the guest already
        (POSTCOPY, src(None), dst("incoming"), Verdict.WAIT),
        # the source cannot say, or handed over: never failed, never lost
        (RUNNING, src(trouble=AWAY), dst("incoming"), Verdict.WAIT),
        (RUNNING, src(trouble=AWAY), dst(None), Verdict.WAIT),
        (SWITCHING, src("paused"), dst(trouble=AWAY), Verdict.WAIT),
        (SWITCHING, src("paused"), dst("incoming"), Verdict.WAIT),
        (RUNNING, src(None), dst(trouble=AWAY), Verdict.WAIT),
    ],
)
def test_verdicts(
    state: MigrationState, source: Sighting, dest: Sighting, verdict: Verdict
) -> None:
    assert judge(state, source, dest, waited_s=1, patience_s=60).verdict is verdict


def test_a_source_that_runs_it_keeps_it_once_patience_runs_out() -> None:
    for dest in (dst("incoming"), dst(trouble=AWAY)):
        finding = judge(RUNNING, src("running"), dest, waited_s=61, patience_s=60)
        assert finding.verdict is Verdict.STAYED
        assert finding.reason.startswith("no progress visible for 61s (no_progress_s 60)")
    # patience never fails a migration whose source does not run the guest
    for source in (src(trouble=AWAY), src("paused")):
        late = judge(SWITCHING, source, dst(trouble=AWAY), waited_s=3600, patience_s=60)
        assert late.verdict is Verdict.WAIT


def test_reasons_say_what_each_end_answered() -> None:
    finding = judge(RUNNING, src(trouble=AWAY), dst("incoming"), waited_s=1, patience_s=60)
    assert finding.reason == (
        f"cannot tell where it runs (host1 did not answer ({AWAY}); host2 has it incoming)"
    )
    lost = judge(RUNNING, src(None), dst("incoming"), waited_s=1, patience_s=60)
    assert lost.reason == "neither end runs it (host1 has no copy; host2 has it incoming)"
