"""ORM records to API bodies."""

from __future__ import annotations

from ferry.api import schemas
from ferry.db.models import Drain, Host
from ferry.domain.host import AdminState, MaintenanceState, excluded_from_scheduling
from ferry.protocol import Capabilities, Inventory
from ferry.scheduler.model import Resources
from ferry.scheduler.planner import Plan
from ferry.services import placement
from ferry.services.hosts import HostLoad, LivenessPolicy
from ferry.services.maintenance import MaintenancePreview, MaintenanceStatus
from ferry.services.placement import capacity


def maintenance_info(host: Host) -> schemas.MaintenanceInfo:
    state = MaintenanceState(host.maintenance_state)
    return schemas.MaintenanceInfo(
        state=state,
        reason=host.maintenance_reason,
        actor=host.maintenance_actor,
        since=host.maintenance_since,
        changed_at=host.maintenance_changed_at,
        schedulable=not excluded_from_scheduling(state),
    )


def host(record: Host, load: HostLoad, policy: LivenessPolicy) -> schemas.HostOut:
    return schemas.HostOut(
        name=record.name,
        management_address=record.management_address,
        migration_address=record.migration_address,
        liveness=policy.of(record),
        last_heartbeat_at=record.last_heartbeat_at,
        admin=schemas.AdminOut(
            state=AdminState(record.admin_state),
            reason=record.admin_reason,
            actor=record.admin_actor,
            changed_at=record.admin_changed_at,
        ),
        maintenance=maintenance_info(record),
        inventory=Inventory.model_validate(record, from_attributes=True),
        capabilities=Capabilities.model_validate(record, from_attributes=True),
        instances=load.instances,
        capacity=_resources(capacity(record)),
        used=_resources(load.used),
        storage=schemas.StorageOut(
            kind=record.storage_kind, pool=record.storage_pool, free_gb=record.storage_free_gb
        ),
        agent_version=record.agent_version,
        agent_url=record.agent_url,
        registered_at=record.registered_at,
    )


def drain(record: Drain | None) -> schemas.DrainOut | None:
    if record is None:
        return None
    return schemas.DrainOut(
        id=record.id,
        state=record.state,
        reason=record.reason,
        actor=record.actor,
        instances_total=record.instances_total,
        instances_moved=record.instances_moved,
        instances_failed=record.instances_failed,
        error=record.error,
        created_at=record.created_at,
        finished_at=record.finished_at,
        plan=[schemas.PlanEntry.model_validate(entry) for entry in record.plan or []],
        force=bool((record.policy or {}).get("force", False)),
    )


def maintenance(status: MaintenanceStatus) -> schemas.MaintenanceOut:
    return schemas.MaintenanceOut(
        host=status.host.name,
        maintenance=maintenance_info(status.host),
        drain=drain(status.drain),
        instances_remaining=status.instances_remaining,
        migrations=[
            schemas.DrainMigrationOut(
                id=move.migration.id,
                instance=move.instance,
                attempt=move.migration.attempt,
                kind=move.migration.kind,
                state=move.migration.state,
                destination=move.destination,
                bytes_total=move.migration.bytes_total,
                bytes_sent=move.migration.bytes_sent,
                bytes_remaining=move.migration.bytes_remaining,
                throughput_mbps=move.migration.throughput_mbps,
                passes=move.migration.passes,
                disk=schemas.DiskProgressOut.of(move.migration),
                downtime_ms=move.migration.downtime_ms,
                total_time_ms=move.migration.total_time_ms,
                error=move.migration.error,
                created_at=move.migration.created_at,
                started_at=move.migration.started_at,
                finished_at=move.migration.finished_at,
            )
            for move in status.moves
        ],
    )


def preview(result: MaintenancePreview) -> schemas.MaintenancePreviewOut:
    sizes = {i.id: placement.bytes_to_move(i) for i in result.instances}
    ram = sum(r for r, _ in sizes.values())
    disk = sum(d for _, d in sizes.values())
    return schemas.MaintenancePreviewOut(
        host=result.host.name,
        from_state=result.from_state,
        to_state=result.to_state,
        instances=[
            schemas.InstanceBrief(
                id=i.id,
                name=i.name,
                vcpus=i.vcpus,
                ram_mb=i.ram_mb,
                state=i.state,
                disk_bytes=sizes[i.id][1],
            )
            for i in result.instances
        ],
        to_move=schemas.BytesToMove(ram_bytes=ram, disk_bytes=disk, total_bytes=ram + disk),
        plan=plan(result.plan),
        notes=result.notes,
    )


def _resources(r: Resources) -> schemas.ResourcesOut:
    return schemas.ResourcesOut(vcpus=r.vcpus, ram_mb=r.ram_mb, disk_gb=r.disk_gb)


def plan(result: Plan) -> schemas.PlanOut:
    return schemas.PlanOut(
        complete=result.complete,
        placements=[
            schemas.PlanEntry(
                instance=p.instance, instance_id=p.instance_id, destination=p.destination
            )
            for p in result.placements
        ],
        unplaced=[
            schemas.PlanEntry(instance=name, destination=None, reason=why)
            for name, why in result.unplaced.items()
        ],
        loads=[
            schemas.DestinationLoad(
                host=load.host,
                instances=load.instances,
                capacity=_resources(load.capacity),
                before=_resources(load.before),
                after=_resources(load.after),
                utilization_before=round(load.utilization_before, 4),
                utilization_after=round(load.utilization_after, 4),
            )
            for load in result.loads
        ],
    )
