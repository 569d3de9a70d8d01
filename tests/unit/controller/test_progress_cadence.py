"""A running migration's progress is stored at least every second, whatever the configured
reconcile interval (regression: the migration loop passed, and so read progress, only once per
`reconcile_interval`, so a 5 s interval left the stored progress up to 5 s old)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.config import load_controller_settings
from ferry.controller.runtime import PROGRESS_INTERVAL_S, Controller


@pytest.mark.parametrize("reconcile_interval", [0.2, 1.0, 5.0, 30.0])
def test_the_migration_loop_reads_progress_at_least_every_second(
    tmp_path: Path, reconcile_interval: float
) -> None:
    settings = load_controller_settings(state_dir=tmp_path, reconcile_interval=reconcile_interval)
    controller = Controller(settings)
    loops = {loop.name: loop for loop in controller.loops}
    migrations = loops["migrations"]
    assert PROGRESS_INTERVAL_S == 1.0
    assert migrations.interval == min(reconcile_interval, PROGRESS_INTERVAL_S)
    # A pass every interval reads each running migration: a reading is due after half of it.
    assert controller.migrator.poll_s == migrations.interval / 2
    # The other loops keep the configured pace.
    assert loops["drains"].interval == reconcile_interval
