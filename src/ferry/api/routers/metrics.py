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


@router.get("/v1/metrics", response_model=MetricsOut, responses=ERRORS)
async def metrics(ctl: Ctl, _who: Reader) -> MetricsOut:
    counter = ctl.db.statements
    return MetricsOut(db_statements=counter.total, db_statements_by_verb=counter.snapshot())
