"""The scale bench's arithmetic, pure: percentiles, a process's CPU time from /proc, resource
use over a window, per-migration figures net of the background, and ratios."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[min(rank, len(ordered) - 1)]


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    """Count, p50, p99 and max of latencies in milliseconds."""
    return {
        "count": float(len(values_ms)),
        "p50": percentile(values_ms, 50),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms, default=0.0),
    }


def cpu_seconds(stat: str, ticks_per_second: int) -> float:
    """User plus system CPU time of a process from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may hold spaces and parentheses itself,
    so fields are counted after its last ')': utime and stime are fields 14 and 15."""
    rest = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_second


@dataclass(frozen=True)
class Sample:
    """One reading of the controller: when, its CPU time so far, its SQL statements so far."""

    at: float  # monotonic seconds
    cpu_s: float
    statements: int
    by_verb: dict[str, int] = field(default_factory=dict)
    fleet_cpu_s: float = 0.0


@dataclass(frozen=True)
class Usage:
    """What the controller spent between two samples."""

    wall_s: float
    cpu_s: float
    statements: int
    by_verb: dict[str, int]
    fleet_cpu_s: float = 0.0

    @classmethod
    def between(cls, start: Sample, end: Sample) -> Usage:
        verbs = start.by_verb.keys() | end.by_verb.keys()
        return cls(
            wall_s=end.at - start.at,
            cpu_s=end.cpu_s - start.cpu_s,
            statements=end.statements - start.statements,
            by_verb={v: end.by_verb.get(v, 0) - start.by_verb.get(v, 0) for v in sorted(verbs)},
            fleet_cpu_s=end.fleet_cpu_s - start.fleet_cpu_s,
        )

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second (1.0: one core busy all along)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def statements_per_s(self) -> float:
        return self.statements / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class PerMigration:
    """CPU and statements per completed migration over a drain window: gross (everything the
    controller did meanwhile) and net of the background (the rate measured with the same read
    load and heartbeats but no drain, times the window's length)."""

    migrations: int
    cpu_ms_gross: float
    cpu_ms_net: float
    statements_gross: float
    statements_net: float


def per_migration(usage: Usage, migrations: int, background: Usage) -> PerMigration:
    if migrations <= 0:
        return PerMigration(0, 0.0, 0.0, 0.0, 0.0)
    cpu_net = usage.cpu_s - background.cpu_share * usage.wall_s
    statements_net = usage.statements - background.statements_per_s * usage.wall_s
    return PerMigration(
        migrations=migrations,
        cpu_ms_gross=usage.cpu_s * 1000 / migrations,
        cpu_ms_net=cpu_net * 1000 / migrations,
        statements_gross=usage.statements / migrations,
        statements_net=statements_net / migrations,
    )


def ratio(value: float, baseline: float) -> float | None:
    """value / baseline, or None when the baseline is not positive."""
    return value / baseline if baseline > 0 else None


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0
