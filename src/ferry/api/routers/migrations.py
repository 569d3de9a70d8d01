"""Live migrations: request, list, show, abort."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ferry.api.deps import Ctl, Operator, Reader
from ferry.api.routers.hosts import ERRORS
from ferry.api.schemas import DiskProgressOut
from ferry.db.models import Migration

router = APIRouter(prefix="/v1", tags=["migrations"])


class MigrateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = Field(default=None, max_length=63, description="none: the scheduler picks")
    policy: dict[str, Any] = Field(
        default_factory=dict, description="convergence policy overrides for this migration"
    )


class MigrationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    instance_id: str
    instance: str
    source: str
    destination: str | None
    kind: str
    state: str
    attempt: int
    actor: str
    policy: dict[str, Any]
    downtime_limit_ms: int | None
    bytes_total: int | None
    bytes_sent: int | None
    bytes_remaining: int | None
    dirty_rate: int | None
    passes: int | None
    throughput_mbps: float | None
    disk: DiskProgressOut | None = Field(
        default=None, description="a local disk copied with the instance: its progress"
    )
    expected_downtime_ms: int | None
    downtime_ms: int | None
    total_time_ms: int | None = Field(
        default=None, description="QEMU's measured time from the stream's start to switchover"
    )
    error: str | None
    cancel_requested: bool = Field(
        default=False,
        description="an abort was asked for: the migration ends cancelled at its next step",
    )
    leftover: str | None = Field(
        default=None, description="source or destination: that end still holds a stale copy"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress_at: datetime | None


async def _out(ctl: Ctl, migration: Migration) -> MigrationOut:
    names = await ctl.migrations.names(migration)
    return MigrationOut.model_validate(
        {
            **{
                c: getattr(migration, c) for c in MigrationOut.model_fields if hasattr(migration, c)
            },
            **names,
            "disk": DiskProgressOut.of(migration),
        }
    )


@router.post(
    "/instances/{name}/migrate", response_model=MigrationOut, status_code=202, responses=ERRORS
)
async def migrate(
    ctl: Ctl, who: Operator, name: str, body: MigrateRequest | None = None
) -> MigrationOut:
    body = body or MigrateRequest()
    migration = await ctl.migrations.request(name, body.host, who.name, body.policy)
    return await _out(ctl, migration)


@router.get("/migrations", response_model=list[MigrationOut], responses=ERRORS)
async def list_migrations(
    ctl: Ctl,
    _who: Reader,
    state: Annotated[str | None, Query(max_length=16)] = None,
    host: Annotated[str | None, Query(max_length=63)] = None,
    instance: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[MigrationOut]:
    found = await ctl.migrations.list(state=state, host=host, instance=instance, limit=limit)
    return [await _out(ctl, m) for m in found]


@router.get("/migrations/{migration_id}", response_model=MigrationOut, responses=ERRORS)
async def show_migration(ctl: Ctl, _who: Reader, migration_id: str) -> MigrationOut:
    return await _out(ctl, await ctl.migrations.get(migration_id))


@router.post(
    "/migrations/{migration_id}/abort",
    response_model=MigrationOut,
    status_code=202,
    responses=ERRORS,
)
async def abort_migration(ctl: Ctl, who: Operator, migration_id: str) -> MigrationOut:
    return await _out(ctl, await ctl.migrations.abort(migration_id, who.name))
