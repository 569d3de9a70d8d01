"""What agents call: register their host, then heartbeat."""

from __future__ import annotations

import functools

from fastapi import APIRouter

from ferry.api.deps import Agent, Ctl
from ferry.api.routers.hosts import ERRORS
from ferry.protocol import (
    Heartbeat,
    HeartbeatAccepted,
    HostRegistration,
    RegistrationAccepted,
)

router = APIRouter(prefix="/v1/agent", tags=["agent"])


@router.post("/register", response_model=RegistrationAccepted, responses=ERRORS)
async def register(ctl: Ctl, who: Agent, body: HostRegistration) -> RegistrationAccepted:
    host, created = await ctl.hosts.register(body, who.name)
    return RegistrationAccepted(
        host=host.name, heartbeat_interval=ctl.settings.heartbeat_interval, created=created
    )


@router.post("/hosts/{name}/heartbeat", response_model=HeartbeatAccepted, responses=ERRORS)
async def heartbeat(
    ctl: Ctl, who: Agent, name: str, body: Heartbeat | None = None
) -> HeartbeatAccepted:
    report = None
    if body is not None and body.guests is not None:
        report = functools.partial(ctl.instances.settle, guests=body.guests)
    host = await ctl.hosts.heartbeat(name, who.name, report)
    return HeartbeatAccepted(host=host.name, heartbeat_interval=ctl.settings.heartbeat_interval)
