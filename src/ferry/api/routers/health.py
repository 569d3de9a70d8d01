"""The one endpoint open without a token."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from ferry import __version__
from ferry.api import schemas
from ferry.api.deps import Ctl

router = APIRouter(tags=["health"])


@router.get("/v1/health", response_model=schemas.HealthOut)
async def health(ctl: Ctl) -> schemas.HealthOut:
    async with ctl.db.reading() as session:
        await session.execute(text("SELECT 1"))
    return schemas.HealthOut(status="ok", version=__version__, database="ok")
