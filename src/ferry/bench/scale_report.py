"""The scale bench's report: JSON (every phase and figure), the rows of the terminal table and the
summary lines, from which `ferry bench report` builds its section (`report.scale_section`).
Pure functions of a `ScaleResult`'s JSON, so they are tested without a run.

Each figure names its baseline, measured in the same run:
- read latency during the drains against the same read load with no drain running;
- controller CPU and SQL statements per completed migration during the drains against a single
  host's drain (gross: all the controller did meanwhile; net: less the background rate of the
  read-only phase times the window);
- drain time (each drain's record) and migrations per second against the single drain.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ferry.bench.scale import (
    MANY_DRAINS,
    NO_DRAIN,
    ONE_DRAIN,
    DrainPhase,
    ScaleResult,
    networks,
)
from ferry.bench.scale_load import ALL
from ferry.bench.scale_stats import Usage, median, per_migration, ratio


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        **asdict(usage),
        "cpu_share": usage.cpu_share,
        "statements_per_s": usage.statements_per_s,
    }


def _drain(phase: DrainPhase, background: Usage) -> dict[str, Any]:
    return {
        "hosts": phase.hosts,
        "usage": _usage(phase.usage),
        "migrations": phase.migrations,
        "attempts": phase.attempts,
        "drain_s": phase.drain_s,
        "drain_s_median": median(phase.drain_s),
        "migrations_per_s": phase.migrations / phase.usage.wall_s if phase.usage.wall_s else 0.0,
        "per_migration": asdict(per_migration(phase.usage, phase.migrations, background)),
    }


def _figure(name: str, unit: str, baseline: str, base: float, value: float) -> dict[str, Any]:
    return {
        "figure": name,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": base,
        "value": value,
        "ratio": ratio(value, base),
    }


def figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures, each against its baseline from the same run."""
    one, many = report["phases"]["one_drain"], report["phases"]["drains"]
    lat = report["latency"]
    quiet, busy = lat[NO_DRAIN].get(ALL, {}), lat[MANY_DRAINS].get(ALL, {})
    rows = [
        _figure(
            "API read latency p50", "ms", NO_DRAIN, quiet.get("p50", 0.0), busy.get("p50", 0.0)
        ),
        _figure(
            "API read latency p99", "ms", NO_DRAIN, quiet.get("p99", 0.0), busy.get("p99", 0.0)
        ),
    ]
    for key, label in (
        ("cpu_ms_net", "controller CPU per migration, net"),
        ("cpu_ms_gross", "controller CPU per migration, gross"),
        ("statements_net", "SQL statements per migration, net"),
        ("statements_gross", "SQL statements per migration, gross"),
    ):
        unit = "ms" if key.startswith("cpu") else "statements"
        base, value = one["per_migration"][key], many["per_migration"][key]
        rows.append(_figure(label, unit, ONE_DRAIN, base, value))
    rows += [
        _figure("drain time (median)", "s", ONE_DRAIN, one["drain_s_median"],
                many["drain_s_median"]),
        _figure("migrations per second", "1/s", ONE_DRAIN, one["migrations_per_s"],
                many["migrations_per_s"]),
        _figure("controller CPU busy", "cores", NO_DRAIN, report["phases"]["reads"]["cpu_share"],
                many["usage"]["cpu_share"]),
    ]  # fmt: skip
    return rows


def to_json(result: ScaleResult) -> dict[str, Any]:
    background = result.reads
    report: dict[str, Any] = {
        "options": asdict(result.options),
        "heartbeat_interval_s": result.options.beat_s,
        "networks": len(networks(result.options.instances)),
        "drain_policy": result.options.policy,
        "setup": result.setup,
        "phases": {
            "idle": _usage(result.idle),
            "reads": _usage(result.reads),
            "one_drain": _drain(result.one, background),
            "drains": _drain(result.many, background),
        },
        "latency": result.latency,
        "read_errors": result.read_errors,
        "read_skipped": result.read_skipped,
        "verification": result.verification,
        "problems": result.problems,
        "wall_s": result.wall_s,
    }
    report["figures"] = figures(report)
    report["latency_ratios"] = latency_ratios(result.latency)
    return report


def latency_ratios(latency: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Per kind of read: p50 and p99 during the drains over the same without a drain."""
    quiet, busy = latency.get(NO_DRAIN, {}), latency.get(MANY_DRAINS, {})
    return {
        label: {q: ratio(busy[label][q], quiet[label][q]) for q in ("p50", "p99")}
        for label in sorted(quiet.keys() & busy.keys())
    }


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The figures as the terminal table shows them."""
    many = f"{len(report['phases']['drains']['hosts'])} drains"
    return [
        {
            "figure": f["figure"],
            "unit": f["unit"],
            "baseline": f"{_num(f['baseline_value'], 2)} ({f['baseline']})",
            "value": f"{_num(f['value'], 2)} ({many})",
            "ratio": _num(f["ratio"], 2),
        }
        for f in report["figures"]
    ]


def latency_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    lat = report["latency"]
    rows = []
    for label, ratios in report["latency_ratios"].items():
        quiet, busy = lat[NO_DRAIN][label], lat[MANY_DRAINS][label]
        rows.append({
            "read": label,
            "p50": f"{quiet['p50']:.0f} -> {busy['p50']:.0f}",
            "p99": f"{quiet['p99']:.0f} -> {busy['p99']:.0f}",
            "ratio": f"{_num(ratios['p50'], 2)} / {_num(ratios['p99'], 2)}",
            "count": f"{quiet['count']:.0f} / {busy['count']:.0f}",
        })  # fmt: skip
    return rows


def summary_lines(report: dict[str, Any]) -> list[str]:
    o, setup, phases = report["options"], report["setup"], report["phases"]
    one, many = phases["one_drain"], phases["drains"]
    verified = report["verification"]
    return [
        f"{o['hosts']} hosts, {o['instances']} instances in {report['networks']} networks; "
        f"heartbeat every "
        f"{report['heartbeat_interval_s']:g}s; {o['read_rate']:g} API reads/s; drain policy "
        f"{report['drain_policy']}",
        f"setup: hosts up in {setup['fleet_up_s']:.1f}s; seeding: {o['instances']} instances "
        f"created in {setup['seed_create_s']:.1f}s ({o['instances'] / setup['seed_create_s']:.0f}"
        f"/s, {o['seed_concurrency']} in flight), all running after {setup['seed_running_s']:.1f}s",
        f"background: idle {phases['idle']['cpu_share']:.2f} cores, "
        f"{phases['idle']['statements_per_s']:.0f} statements/s; with reads "
        f"{phases['reads']['cpu_share']:.2f} cores, {phases['reads']['statements_per_s']:.0f}/s",
        f"1 drain: {one['migrations']} migrations in {one['usage']['wall_s']:.1f}s; "
        f"{len(many['hosts'])} drains: {many['migrations']} migrations "
        f"({many['attempts']} attempts) in {many['usage']['wall_s']:.1f}s",
        f"outcome: {verified['drained_in_maintenance']}/{verified['drained']} drained hosts in "
        f"maintenance, {verified['on_exactly_their_host']}/{verified['instances']} instances on "
        f"exactly their host; problems: {'; '.join(report['problems']) or 'none'}",
        f"wall time {report['wall_s']:.0f}s",
    ]


NOTES = (
    "Baselines from the same run: read latency against the same read load with no drain; "
    "per-migration CPU and statements against one host's drain with the same policy and reads.",
    "Net = less the background rate (heartbeats and reads, no drain) times the window; gross = "
    "everything the controller did in the window. CPU from /proc/<pid>/stat (user + system); "
    "statements from GET /v1/metrics.",
    "Latency runs from when each read was due (fixed rate, open loop) to its answer.",
)
