"""What agents call: register their host, heartbeat, and report their guests' migration events."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ferry.api.deps import Agent, Ctl
from ferry.api.routers.hosts import ERRORS
from ferry.protocol import (
    Heartbeat,
    HeartbeatAccepted,
    HostRegistration,
    MigrationEvents,
    MigrationEventsAccepted,
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
    free = body.storage_free_gb if body is not None else None
    host = await ctl.hosts.heartbeat(name, who.name, report, free)
    return HeartbeatAccepted(host=host.name, heartbeat_interval=ctl.settings.heartbeat_interval)


@router.post(
    "/hosts/{name}/migration-events",
    response_model=MigrationEventsAccepted,
    status_code=202,
    responses=ERRORS,
)
async def migration_events(
    ctl: Ctl, who: Agent, name: str, body: MigrationEvents
) -> MigrationEventsAccepted:
    """The host's hypervisor announced that these guests' migrations changed: their progress is
    read at once rather than at the next poll."""
    host = await ctl.hosts.require(name)
    accepted = ctl.migration_events(host.name, [event.instance_id for event in body.events])
    return MigrationEventsAccepted(host=host.name, accepted=accepted)


@router.get("/networks/{name}/leases", responses={**ERRORS, 304: {"description": "unchanged"}})
async def leases(ctl: Ctl, _who: Agent, name: str, request: Request) -> Response:
    """The network's fixed DHCP leases, which every host's DHCP server serves: each port of a
    live instance (MAC, IP, its name as hostname). The ETag is the content's digest: an agent
    that sends it back in If-None-Match gets 304 while nothing changed."""
    network, rows = await ctl.catalog.leases(name)
    body: dict[str, Any] = {
        "network": network.name,
        "cidr": network.cidr,
        "gateway": network.gateway,
        "leases": [{"mac": mac, "ip": ip, "hostname": host} for mac, ip, host in rows],
    }
    tag = '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers={"ETag": tag})
    return JSONResponse(body, headers={"ETag": tag})
