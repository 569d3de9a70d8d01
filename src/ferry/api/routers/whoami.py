"""Who the caller is: the token's name, role and permissions (the dashboard offers only the
actions the role may take)."""

from __future__ import annotations

from fastapi import APIRouter

from ferry.api import schemas
from ferry.api.deps import Caller
from ferry.api.routers.hosts import ERRORS
from ferry.domain.auth import PERMISSIONS

router = APIRouter(tags=["tokens"])


@router.get("/v1/whoami", response_model=schemas.WhoAmIOut, responses=ERRORS)
async def whoami(who: Caller) -> schemas.WhoAmIOut:
    permissions = sorted(PERMISSIONS[who.role])
    return schemas.WhoAmIOut(name=who.name, role=who.role, permissions=permissions)
