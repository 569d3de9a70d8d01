"""Counters of the controller process, for monitoring and benchmarks (see db/stats.py)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ferry.api.deps import Ctl, Reader
from ferry.api.routers.hosts import ERRORS

router = APIRouter(tags=["health"])


class MetricsOut(BaseModel):
    db_statements: int = Field(
        description="SQL statements sent to the database since the controller started"
    )
    db_statements_by_verb: dict[str, int] = Field(
        description="the same, by leading verb: SELECT, INSERT, UPDATE, DELETE, OTHER"
    )
    migration_events_received: int = Field(
        description="guests named in agents' migration events (QEMU MIGRATION, MIGRATION_PASS)"
    )
    migration_events_accepted: int = Field(
        description="of those, guests of a migration in flight through the reporting host"
    )
    migration_event_readings: int = Field(
        description="progress readings of a migration made at once because of an event"
    )


@router.get("/v1/metrics", response_model=MetricsOut, responses=ERRORS)
async def metrics(ctl: Ctl, _who: Reader) -> MetricsOut:
    counter, events = ctl.db.statements, ctl.migrator.events
    return MetricsOut(
        db_statements=counter.total,
        db_statements_by_verb=counter.snapshot(),
        migration_events_received=events.received,
        migration_events_accepted=events.accepted,
        migration_event_readings=events.readings,
    )
