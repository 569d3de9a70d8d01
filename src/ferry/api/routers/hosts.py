"""Hosts as operators see them: list, show, disable/enable, maintenance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ferry.api import schemas, views
from ferry.api.deps import Ctl, Operator, Reader
from ferry.domain.host import AdminState, Liveness, MaintenanceState
from ferry.services.hosts import HostFilter, HostLoad

router = APIRouter(prefix="/v1/hosts", tags=["hosts"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut} for code in (401, 403, 404, 409, 422)
}


@router.get("", response_model=list[schemas.HostOut], responses=ERRORS)
async def list_hosts(
    ctl: Ctl,
    _who: Reader,
    admin_state: AdminState | None = None,
    maintenance: Annotated[list[MaintenanceState] | None, Query()] = None,
    liveness: Liveness | None = None,
) -> list[schemas.HostOut]:
    flt = HostFilter(admin_state, tuple(maintenance or ()), liveness)
    hosts, loads = await ctl.hosts.list(flt)
    return [views.host(h, loads.get(h.id, HostLoad()), ctl.liveness) for h in hosts]


@router.get("/{name}", response_model=schemas.HostOut, responses=ERRORS)
async def show_host(ctl: Ctl, _who: Reader, name: str) -> schemas.HostOut:
    record, load = await ctl.hosts.get(name)
    return views.host(record, load, ctl.liveness)


@router.post("/{name}/disable", response_model=schemas.HostOut, responses=ERRORS)
async def disable_host(
    ctl: Ctl, who: Operator, name: str, body: schemas.ReasonIn
) -> schemas.HostOut:
    await ctl.hosts.disable(name, body.reason, who.name)
    return await show_host(ctl, who, name)


@router.post("/{name}/enable", response_model=schemas.HostOut, responses=ERRORS)
async def enable_host(
    ctl: Ctl, who: Operator, name: str, body: schemas.OptionalReasonIn | None = None
) -> schemas.HostOut:
    await ctl.hosts.enable(name, body.reason if body else None, who.name)
    return await show_host(ctl, who, name)


@router.get("/{name}/maintenance", response_model=schemas.MaintenanceOut, responses=ERRORS)
async def maintenance_status(ctl: Ctl, _who: Reader, name: str) -> schemas.MaintenanceOut:
    return views.maintenance(await ctl.maintenance.status(name))


@router.post(
    "/{name}/maintenance/enter",
    response_model=schemas.MaintenanceOut | schemas.MaintenancePreviewOut,
    responses=ERRORS,
    summary="Enter maintenance: stop scheduling onto the host at once and drain it",
)
async def enter_maintenance(
    ctl: Ctl, who: Operator, name: str, body: schemas.MaintenanceEnterIn
) -> schemas.MaintenanceOut | schemas.MaintenancePreviewOut:
    if body.dry_run:
        return views.preview(await ctl.maintenance.preview(name, body.reason))
    await ctl.maintenance.enter(name, body.reason, who.name, force=body.force, policy=body.policy)
    return views.maintenance(await ctl.maintenance.status(name))


@router.post(
    "/{name}/maintenance/retry",
    response_model=schemas.MaintenanceOut,
    responses=ERRORS,
    summary="Retry a failed drain: instances still on the host get fresh attempts",
)
async def retry_drain(ctl: Ctl, who: Operator, name: str) -> schemas.MaintenanceOut:
    await ctl.maintenance.retry(name, who.name)
    return views.maintenance(await ctl.maintenance.status(name))


@router.post(
    "/{name}/maintenance/exit",
    response_model=schemas.MaintenanceOut,
    responses=ERRORS,
    summary="Exit maintenance: cancel any drain and put the host back in service",
)
async def exit_maintenance(
    ctl: Ctl, who: Operator, name: str, body: schemas.OptionalReasonIn | None = None
) -> schemas.MaintenanceOut:
    await ctl.maintenance.exit(name, body.reason if body else None, who.name)
    return views.maintenance(await ctl.maintenance.status(name))
