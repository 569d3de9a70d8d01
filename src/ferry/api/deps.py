"""Request dependencies: the controller and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ferry.controller.runtime import Controller
from ferry.domain.auth import Permission, allows
from ferry.domain.errors import Forbidden, Unauthenticated
from ferry.services.tokens import Principal

_bearer = HTTPBearer(auto_error=False, description="an API token: ferry token create")


def controller(request: Request) -> Controller:
    ctl = request.app.state.controller
    assert isinstance(ctl, Controller)
    return ctl


Ctl = Annotated[Controller, Depends(controller)]


async def authenticate(
    ctl: Ctl, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise Unauthenticated("no bearer token: send 'Authorization: Bearer <token>'")
    return await ctl.tokens.authenticate(credentials.credentials)


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    async def authorize(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not allows(principal.role, permission):
            raise Forbidden(
                f"token {principal.name!r} has role '{principal.role.value}', which may not"
                f" {permission.value}"
            )
        return principal

    return authorize


Caller = Annotated[Principal, Depends(authenticate)]  # any valid token, whatever its role
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Operator = Annotated[Principal, Depends(require(Permission.OPERATE))]
Admin = Annotated[Principal, Depends(require(Permission.MANAGE_TOKENS))]
Agent = Annotated[Principal, Depends(require(Permission.REPORT))]
