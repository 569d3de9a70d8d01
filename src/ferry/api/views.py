"""ORM records to API bodies."""

from __future__ import annotations

from ferry.api import schemas
from ferry.db.models import Drain, Host
from ferry.domain.host import AdminState, MaintenanceState, excluded_from_scheduling
from ferry.protocol import Capabilities, Inventory
from ferry.services.hosts import LivenessPolicy
from ferry.services.maintenance import MaintenancePreview, MaintenanceStatus


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


def host(record: Host, instances: int, policy: LivenessPolicy) -> schemas.HostOut:
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
        instances=instances,
        agent_version=record.agent_version,
        agent_url=record.agent_url,
        registered_at=record.registered_at,
    )


def drain(record: Drain | None) -> schemas.DrainOut | None:
    if record is None:
        return None
    return schemas.DrainOut.model_validate(record, from_attributes=True)


def maintenance(status: MaintenanceStatus) -> schemas.MaintenanceOut:
    return schemas.MaintenanceOut(
        host=status.host.name,
        maintenance=maintenance_info(status.host),
        drain=drain(status.drain),
        instances_remaining=status.instances_remaining,
    )


def preview(result: MaintenancePreview) -> schemas.MaintenancePreviewOut:
    return schemas.MaintenancePreviewOut(
        host=result.host.name,
        from_state=result.from_state,
        to_state=result.to_state,
        instances=[
            schemas.InstanceBrief(
                id=i.id, name=i.name, vcpus=i.vcpus, ram_mb=i.ram_mb, state=i.state
            )
            for i in result.instances
        ],
        notes=result.notes,
    )
