"""API tokens, for admins."""

from __future__ import annotations

from fastapi import APIRouter

from ferry.api import schemas
from ferry.api.deps import Admin, Ctl
from ferry.api.routers.hosts import ERRORS

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.get("", response_model=list[schemas.TokenOut], responses=ERRORS)
async def list_tokens(
    ctl: Ctl, _who: Admin, include_revoked: bool = False
) -> list[schemas.TokenOut]:
    return [schemas.TokenOut.model_validate(t) for t in await ctl.tokens.list(include_revoked)]


@router.post("", response_model=schemas.TokenCreatedOut, status_code=201, responses=ERRORS)
async def create_token(ctl: Ctl, who: Admin, body: schemas.TokenIn) -> schemas.TokenCreatedOut:
    issued = await ctl.tokens.create(body.name, body.role, who.name)
    out = schemas.TokenOut.model_validate(issued.token)
    return schemas.TokenCreatedOut(**out.model_dump(), secret=issued.secret)


@router.delete("/{name}", response_model=schemas.TokenOut, responses=ERRORS)
async def revoke_token(ctl: Ctl, who: Admin, name: str) -> schemas.TokenOut:
    return schemas.TokenOut.model_validate(await ctl.tokens.revoke(name, who.name))
