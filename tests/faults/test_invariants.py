"""The invariant checker on hand-made states: a consistent cluster passes, and each kind of
inconsistency is named, with the instance, host or migration concerned."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ferry.faults.invariants import (
    Claim,
    DiskReading,
    DrainRecord,
    GuestCopy,
    HostDisks,
    HostRecord,
    InstanceRecord,
    Kind,
    MigrationRecord,
    Snapshot,
    Violation,
    check,
)

VM1 = InstanceRecord("id-1", "vm1", "running", "host2")
VM2 = InstanceRecord("id-2", "vm2", "error", "host3")  # its guest died and it moved cold


def consistent() -> Snapshot:
    """host1 drained: vm1 moved live to host2, vm2 (dead) cold to host3."""
    return Snapshot(
        instances=[VM1, VM2, InstanceRecord("id-0", "old", "deleted", None)],
        hosts=[
            HostRecord("host1", "in_maintenance", used=(0, 0, 0)),
            HostRecord("host2", used=(1, 128, 0)),
            HostRecord("host3", used=(1, 128, 0)),
        ],
        drains=[DrainRecord("d1", "host1", "completed")],
        migrations=[
            MigrationRecord("m1", "id-1", "vm1", "host1", "host2", "completed"),
            MigrationRecord("m2", "id-2", "vm2", "host1", "host3", "failed", error="no peer"),
            MigrationRecord("m3", "id-2", "vm2", "host1", "host3", "completed"),
        ],
        guests={
            "host1": [],
            "host2": [GuestCopy("id-1", "vm1", "running")],
            "host3": [GuestCopy("id-2", "vm2", "stopped")],
        },
        claims=[Claim("id-1", "host2"), Claim("id-2", "host3")],
    )


def kinds(violations: list[Violation]) -> list[Kind]:
    return [v.kind for v in violations]


def only(snapshot: Snapshot) -> Violation:
    found = check(snapshot)
    assert len(found) == 1, found
    return found[0]


def test_a_consistent_cluster_passes() -> None:
    assert check(consistent()) == []


def test_without_claims_the_hosts_totals_are_checked_instead() -> None:
    snapshot = consistent()
    snapshot.claims = None
    assert check(snapshot) == []
    snapshot.hosts[0] = HostRecord("host1", "in_maintenance", used=(1, 128, 0))
    found = only(snapshot)
    assert found.kind is Kind.CLAIMS and found.subject == "host1"
    assert "1 vCPU / 128 MiB / 0 GiB claimed, but its instances need 0 / 0 / 0" in found.message


def test_an_agent_that_does_not_answer() -> None:
    snapshot = consistent()
    snapshot.guests["host2"] = None
    found = only(snapshot)  # vm1's placement cannot be judged: only the silence is reported
    assert (found.kind, found.message) == (Kind.AGENT, "the agent of host2 does not answer")


def test_an_instance_that_runs_nowhere() -> None:
    snapshot = consistent()
    snapshot.guests["host2"] = [GuestCopy("id-1", "vm1", "stopped")]
    found = only(snapshot)
    assert found.kind is Kind.PLACEMENT and found.subject == "vm1"
    assert found.message == "the record of vm1 says it runs on host2, but it runs nowhere"


def test_an_instance_that_runs_twice() -> None:
    snapshot = consistent()
    snapshot.guests["host1"] = [GuestCopy("id-1", "vm1", "running")]
    assert kinds(check(snapshot)) == [Kind.PLACEMENT, Kind.STRAY_COPY]
    placement, stray = check(snapshot)
    assert placement.message.endswith("but it runs on host1 and host2")
    assert stray.message == "host1 holds a running copy of vm1, which lives on host2"


def test_an_instance_that_runs_elsewhere_than_its_record() -> None:
    snapshot = consistent()
    snapshot.guests["host2"] = []
    snapshot.guests["host1"] = [GuestCopy("id-1", "vm1", "running")]
    assert kinds(check(snapshot)) == [Kind.PLACEMENT, Kind.STRAY_COPY]
    assert check(snapshot)[0].message.endswith("says it runs on host2, but it runs on host1")


def test_an_instance_in_error_that_runs() -> None:
    snapshot = consistent()
    snapshot.guests["host3"] = [GuestCopy("id-2", "vm2", "running")]
    found = only(snapshot)
    assert found.kind is Kind.PLACEMENT
    assert found.message == "vm2 is error by its record (host host3), but it runs on host3"


@pytest.mark.parametrize(
    ("host", "copy", "message"),
    [
        ("host1", GuestCopy("id-1", "vm1", "paused"), "host1 holds a paused copy of vm1"),
        ("host1", GuestCopy("id-2", "vm2", "stopped"), "host1 holds a stopped copy of vm2"),
        ("host3", GuestCopy("id-1", "vm1", "incoming"), "host3 holds an incoming copy of vm1"),
        ("host1", GuestCopy("id-0", "old", "stopped"), "an instance that no longer exists"),
        ("host1", GuestCopy("id-9", "ghost", "running"), "an instance that no longer exists"),
    ],
)
def test_a_copy_left_on_another_host(host: str, copy: GuestCopy, message: str) -> None:
    snapshot = consistent()
    snapshot.guests[host] = [*(snapshot.guests[host] or []), copy]
    found = only(snapshot)
    assert found.kind is Kind.STRAY_COPY and message in found.message


def test_an_incoming_target_on_the_instances_own_host() -> None:
    snapshot = consistent()
    snapshot.guests["host2"] = [GuestCopy("id-1", "vm1", "incoming")]
    assert kinds(check(snapshot)) == [Kind.PLACEMENT, Kind.STRAY_COPY]
    assert check(snapshot)[1].message == "host2, the host of vm1, holds it as incoming"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ([Claim("id-2", "host3")], "vm1 lives on host2 but holds claims on: none"),
        (
            [Claim("id-1", "host2"), Claim("id-1", "host2"), Claim("id-2", "host3")],
            "vm1 lives on host2 but holds claims on: host2 x2",
        ),
        (
            [Claim("id-1", "host1"), Claim("id-2", "host3")],
            "vm1 lives on host2 but holds claims on: host1 x1",
        ),
        (
            [Claim("id-1", "host2"), Claim("id-1", "host3"), Claim("id-2", "host3")],
            "vm1 lives on host2 but holds claims on: host2 x1, host3 x1",
        ),
    ],
)
def test_claims_that_do_not_match_where_the_instance_lives(
    claims: list[Claim], message: str
) -> None:
    snapshot = replace(consistent(), claims=claims)
    found = only(snapshot)
    assert (found.kind, found.subject, found.message) == (Kind.CLAIMS, "vm1", message)


def test_a_claim_left_by_a_finished_migration() -> None:
    snapshot = consistent()
    snapshot.claims = [Claim("id-1", "host2", "m1"), Claim("id-2", "host3")]
    found = only(snapshot)
    assert found.kind is Kind.CLAIMS
    assert found.message == "the claim of vm1 on host2 belongs to migration m1, which has ended"


def test_a_claim_of_an_instance_that_is_gone() -> None:
    snapshot = consistent()
    assert snapshot.claims is not None
    snapshot.claims.append(Claim("id-0", "host1"))
    found = only(snapshot)
    assert found.message == "old is gone but still claims resources on host1"


def test_a_drain_that_did_not_end() -> None:
    snapshot = consistent()
    snapshot.drains = [DrainRecord("d1", "host1", "running")]
    snapshot.hosts[0] = HostRecord("host1", "draining", used=(0, 0, 0))
    found = only(snapshot)
    assert (found.kind, found.message) == (Kind.DRAIN, "the drain of host1 is still running")


@pytest.mark.parametrize(
    ("drain", "host", "expected"),
    [
        ("completed", "draining", "in_maintenance"),
        ("failed", "in_maintenance", "drain_failed"),
        ("cancelled", "draining", "in_service"),
        ("completed", "in_service", "in_maintenance"),
    ],
)
def test_a_host_whose_maintenance_state_disagrees_with_its_drain(
    drain: str, host: str, expected: str
) -> None:
    snapshot = consistent()
    snapshot.drains = [DrainRecord("d1", "host1", drain)]
    snapshot.hosts[0] = HostRecord("host1", host, used=(0, 0, 0))
    found = only(snapshot)
    assert found.kind is Kind.MAINTENANCE
    assert found.message == f"the drain of host1 is {drain} but the host is {host} " + (
        f"(expected {expected})"
    )


def test_a_host_out_of_service_without_a_drain() -> None:
    snapshot = consistent()
    snapshot.hosts[2] = HostRecord("host3", "drain_failed", used=(1, 128, 0))
    found = only(snapshot)
    assert (found.kind, found.message) == (
        Kind.MAINTENANCE,
        "host3 is drain_failed without a drain",
    )


@pytest.mark.parametrize("state", ["queued", "scheduled", "preparing", "running", "switching"])
def test_a_migration_left_in_flight(state: str) -> None:
    snapshot = consistent()
    snapshot.migrations.append(
        MigrationRecord("m4abcdefgh", "id-1", "vm1", "host2", "host3", state, error="waits")
    )
    found = only(snapshot)
    assert (found.kind, found.subject) == (Kind.MIGRATION, "m4abcdefgh")
    assert found.message == f"migration m4abcdef of vm1 (host2 -> host3) is still {state} (waits)"


def test_a_stale_copy_still_marked() -> None:
    snapshot = consistent()
    snapshot.migrations[0] = replace(snapshot.migrations[0], leftover="source", error="away")
    found = only(snapshot)
    assert found.kind is Kind.LEFTOVER
    assert found.message == (
        "migration m1 of vm1 (host1 -> host2, completed) still marks a stale copy on its "
        "source: away"
    )


def test_real_host_probes_an_ip_that_does_not_answer_and_leaks() -> None:
    snapshot = consistent()
    snapshot.answers = {"vm1": False}
    snapshot.leaks = {"host1": ["QEMU pid 4242 (vm1)", "tap tap-1234"]}
    assert [str(v) for v in check(snapshot)] == [
        "[ip-unreachable] the IP of vm1 does not answer",
        "[leak] host1 has leaked QEMU pid 4242 (vm1)",
        "[leak] host1 has leaked tap tap-1234",
    ]
    snapshot.answers = {"vm1": True}
    snapshot.leaks = {}
    assert check(snapshot) == []


def test_an_instance_lost_although_the_fault_left_it_a_live_copy() -> None:
    snapshot = consistent()
    snapshot.must_run = {"vm1"}  # vm2's only copy was killed: its error is the fault's
    assert check(snapshot) == []
    snapshot.must_run = {"vm1", "vm2"}
    found = only(snapshot)
    assert (found.kind, found.subject) == (Kind.LOST, "vm2")
    assert (
        found.message == "vm2 is error (host host3), although it kept a live copy through the fault"
    )


def with_disks(kind: str = "shared") -> Snapshot:
    """The consistent cluster, both instances with root disks: on one shared pool, or each on
    its host's local storage."""
    snapshot = consistent()
    snapshot.instances = [replace(i, image="lab") for i in snapshot.instances]
    if kind == "shared":
        pool = HostDisks("shared", "p1", frozenset({"id-1", "id-2"}))
        snapshot.disks = {"host1": pool, "host2": pool, "host3": pool}
    else:
        snapshot.disks = {
            "host1": HostDisks("local", "", frozenset()),
            "host2": HostDisks("local", "", frozenset({"id-1"})),
            "host3": HostDisks("local", "", frozenset({"id-2"})),
        }
    return snapshot


@pytest.mark.parametrize("kind", ["shared", "local"])
def test_disks_where_their_instances_live_pass(kind: str) -> None:
    assert check(with_disks(kind)) == []


def test_a_lost_disk() -> None:
    snapshot = with_disks("local")
    assert snapshot.disks is not None
    snapshot.disks["host2"] = HostDisks("local", "", frozenset())
    found = only(snapshot)
    assert (found.kind, found.message) == (
        Kind.DISK_LOST,
        "the disk of vm1 is not on host2's storage",
    )


def test_a_disk_open_on_two_hosts() -> None:
    snapshot = with_disks()
    snapshot.guests["host1"] = [GuestCopy("id-1", "vm1", "paused")]
    assert Kind.DISK_TWICE in kinds(check(snapshot))
    [twice] = [v for v in check(snapshot) if v.kind is Kind.DISK_TWICE]
    assert twice.message == "the disk of vm1 is open on host1 and host2 at once"


def test_a_disk_left_behind() -> None:
    snapshot = with_disks("local")
    assert snapshot.disks is not None
    snapshot.disks["host1"] = HostDisks("local", "", frozenset({"id-1", "id-0"}))
    assert [(v.kind, v.message) for v in check(snapshot)] == [
        (Kind.DISK_LEAK, "host1 keeps the disk of old, which is gone"),
        (Kind.DISK_LEAK, "host1 keeps a copy of the disk of vm1, which lives on host2"),
    ]


def test_a_destinations_partial_copy_after_an_abort_is_a_leak() -> None:
    """vm1's second move, to host3, was aborted mid-copy: host3's storage still lists the copy
    it was making (its abort did not remove it) while vm1 stays on host2."""
    snapshot = with_disks("local")
    assert snapshot.disks is not None
    snapshot.migrations.append(
        MigrationRecord("m4", "id-1", "vm1", "host2", "host3", "failed", error="cut")
    )
    snapshot.disks["host3"] = HostDisks("local", "", frozenset({"id-1", "id-2"}))
    found = only(snapshot)
    assert (found.kind, found.message) == (
        Kind.DISK_LEAK,
        "host3 keeps a copy of the disk of vm1, which lives on host2",
    )


def intact(snapshot: Snapshot) -> Snapshot:
    """Every disk read on its host holds what it held before the drain."""
    snapshot.disk_before = {"id-1": "a" * 64, "id-2": "b" * 64}
    snapshot.disk_readings = {"id-1": DiskReading("a" * 64), "id-2": DiskReading("b" * 64)}
    return snapshot


@pytest.mark.parametrize("kind", ["shared", "local"])
def test_disks_that_hold_what_they_held_pass(kind: str) -> None:
    assert check(intact(with_disks(kind))) == []


def test_a_copy_that_does_not_hold_what_the_source_held_is_corrupt() -> None:
    """vm1's copy on host2 is not its disk as it was before the drain (a copy cut short, made
    afresh, or of another disk): its content differs."""
    snapshot = intact(with_disks("local"))
    snapshot.disk_readings["id-1"] = DiskReading("c" * 64)
    found = only(snapshot)
    assert (found.kind, found.subject, found.message) == (
        Kind.DISK_CORRUPT,
        "vm1",
        "the disk of vm1 on host2 does not hold what it held before the drain (content "
        "cccccccccccc, before aaaaaaaaaaaa)",
    )


def test_a_disk_that_fails_its_check_is_corrupt() -> None:
    snapshot = intact(with_disks("local"))
    snapshot.disk_readings["id-2"] = DiskReading(None, "qemu-img check exits 2: 1 errors")
    found = only(snapshot)
    assert (found.kind, found.message) == (
        Kind.DISK_CORRUPT,
        "the disk of vm2 on host3 fails its check: qemu-img check exits 2: 1 errors",
    )


def test_a_disk_whose_content_is_not_compared_needs_only_pass_its_check() -> None:
    """Real guests write all along: their readings have no digest, and nothing was recorded
    before the drain; a disk not read (none there: `disk-lost` says so) is not judged."""
    snapshot = with_disks("local")
    snapshot.disk_readings = {"id-1": DiskReading()}
    assert check(snapshot) == []
    snapshot.disk_before = {"id-1": "a" * 64}  # read before, unreadable now
    snapshot.disk_readings = {"id-1": DiskReading(None)}
    assert kinds(check(snapshot)) == [Kind.DISK_CORRUPT]
