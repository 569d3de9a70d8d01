"""Server groups: create, list, show, delete. Instances join one when they are created."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ferry.api import schemas
from ferry.api.deps import Ctl, Operator, Reader
from ferry.api.routers.hosts import ERRORS
from ferry.services.server_groups import GroupView

router = APIRouter(prefix="/v1/server-groups", tags=["server-groups"])


def _out(group: GroupView) -> schemas.ServerGroupOut:
    return schemas.ServerGroupOut(
        name=group.name,
        policy=group.policy,
        members=[
            schemas.ServerGroupMember(name=m.name, host=m.host, state=m.state)
            for m in group.members
        ],
        created_by=group.created_by,
        created_at=group.created_at,
    )


@router.get("", response_model=list[schemas.ServerGroupOut], responses=ERRORS)
async def list_server_groups(ctl: Ctl, _who: Reader) -> list[schemas.ServerGroupOut]:
    return [_out(g) for g in await ctl.server_groups.all()]


@router.post("", response_model=schemas.ServerGroupOut, status_code=201, responses=ERRORS)
async def create_server_group(
    ctl: Ctl, who: Operator, body: schemas.ServerGroupIn
) -> schemas.ServerGroupOut:
    return _out(await ctl.server_groups.create(body.name, body.policy, who.name))


@router.get("/{name}", response_model=schemas.ServerGroupOut, responses=ERRORS)
async def show_server_group(ctl: Ctl, _who: Reader, name: str) -> schemas.ServerGroupOut:
    return _out(await ctl.server_groups.get(name))


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_server_group(ctl: Ctl, who: Operator, name: str) -> Response:
    await ctl.server_groups.delete(name, who.name)
    return Response(status_code=204)
