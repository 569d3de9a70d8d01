"""Flavors, networks and instances."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ferry.api.deps import Ctl, Operator, Reader
from ferry.api.routers.hosts import ERRORS
from ferry.db.models import Instance
from ferry.services.instances import InstanceRequest

router = APIRouter(prefix="/v1", tags=["instances"])


class FlavorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    vcpus: int = Field(ge=1, le=64)
    ram_mb: int = Field(ge=64, le=1024 * 1024)
    disk_gb: int = Field(default=0, ge=0, le=64 * 1024)


class FlavorOut(FlavorIn):
    model_config = ConfigDict(from_attributes=True)


class NetworkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    cidr: str = Field(max_length=64, description="IPv4 range, e.g. 198.19.0.0/16")
    gateway: str | None = Field(default=None, max_length=45)
    allocation_start: str | None = Field(
        default=None, max_length=45, description="first address for instances (default: first)"
    )
    allocation_end: str | None = Field(
        default=None, max_length=45, description="last address for instances (default: last)"
    )


class NetworkOut(NetworkIn):
    model_config = ConfigDict(from_attributes=True)


class InstanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    flavor: str = Field(max_length=63)
    network: str = Field(max_length=63)
    host: str | None = Field(default=None, max_length=63, description="skip the choice")
    dirty_rate_mbps: int = Field(default=0, ge=0, le=10_000, description="guest workload")
    disk_write_kibps: int = Field(
        default=0, ge=0, le=1_000_000, description="guest disk-writing workload (lab image)"
    )
    group: str | None = Field(
        default=None, max_length=63, description="server group the instance joins"
    )
    image: str | None = Field(
        default=None, max_length=63, description="catalog image of the root disk (none: no disk)"
    )


class PortOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    network: str
    mac: str
    ip: str


class InstanceOut(BaseModel):
    id: str
    name: str
    state: str
    host: str | None
    flavor: str
    image: str | None = Field(description="the catalog image of its root disk")
    vcpus: int
    ram_mb: int
    disk_gb: int
    ports: list[PortOut]
    server_group: str | None
    error: str | None
    created_by: str
    created_at: datetime


def _out(instance: Instance, host: str | None) -> InstanceOut:
    return InstanceOut(
        id=instance.id,
        name=instance.name,
        state=instance.state,
        host=host,
        flavor=instance.flavor,
        image=instance.image_ref.name if instance.image_ref is not None else None,
        vcpus=instance.vcpus,
        ram_mb=instance.ram_mb,
        disk_gb=instance.disk_gb,
        ports=[PortOut.model_validate(p) for p in instance.ports],
        server_group=instance.server_group,
        error=instance.error,
        created_by=instance.created_by,
        created_at=instance.created_at,
    )


@router.get("/flavors", response_model=list[FlavorOut], responses=ERRORS)
async def list_flavors(ctl: Ctl, _who: Reader) -> list[FlavorOut]:
    return [FlavorOut.model_validate(f) for f in await ctl.catalog.flavors()]


@router.post("/flavors", response_model=FlavorOut, status_code=201, responses=ERRORS)
async def create_flavor(ctl: Ctl, _who: Operator, body: FlavorIn) -> FlavorOut:
    flavor = await ctl.catalog.create_flavor(body.name, body.vcpus, body.ram_mb, body.disk_gb)
    return FlavorOut.model_validate(flavor)


@router.delete("/flavors/{name}", status_code=204, responses=ERRORS)
async def delete_flavor(ctl: Ctl, _who: Operator, name: str) -> Response:
    await ctl.catalog.delete_flavor(name)
    return Response(status_code=204)


@router.get("/networks", response_model=list[NetworkOut], responses=ERRORS)
async def list_networks(ctl: Ctl, _who: Reader) -> list[NetworkOut]:
    return [NetworkOut.model_validate(n) for n in await ctl.catalog.networks()]


@router.post("/networks", response_model=NetworkOut, status_code=201, responses=ERRORS)
async def create_network(ctl: Ctl, _who: Operator, body: NetworkIn) -> NetworkOut:
    network = await ctl.catalog.create_network(
        body.name, body.cidr, body.gateway, (body.allocation_start, body.allocation_end)
    )
    return NetworkOut.model_validate(network)


@router.delete("/networks/{name}", status_code=204, responses=ERRORS)
async def delete_network(ctl: Ctl, _who: Operator, name: str) -> Response:
    await ctl.catalog.delete_network(name)
    return Response(status_code=204)


@router.get("/instances", response_model=list[InstanceOut], responses=ERRORS)
async def list_instances(
    ctl: Ctl, _who: Reader, host: Annotated[str | None, Query(max_length=63)] = None
) -> list[InstanceOut]:
    return [_out(i, h) for i, h in await ctl.instances.all(host)]


@router.post("/instances", response_model=InstanceOut, status_code=201, responses=ERRORS)
async def create_instance(ctl: Ctl, who: Operator, body: InstanceIn) -> InstanceOut:
    instance, host = await ctl.instances.create(
        InstanceRequest(
            body.name,
            body.flavor,
            body.network,
            body.host,
            body.dirty_rate_mbps,
            group=body.group,
            image=body.image,
            disk_write_kibps=body.disk_write_kibps,
        ),
        who.name,
    )
    return _out(instance, host)


@router.get("/instances/{name}", response_model=InstanceOut, responses=ERRORS)
async def show_instance(ctl: Ctl, _who: Reader, name: str) -> InstanceOut:
    instance = await ctl.instances.get(name)
    return _out(instance, await ctl.instances.host_name(instance))


@router.delete("/instances/{name}", response_model=InstanceOut, status_code=202, responses=ERRORS)
async def delete_instance(ctl: Ctl, who: Operator, name: str) -> InstanceOut:
    instance = await ctl.instances.delete(name, who.name)
    return _out(instance, await ctl.instances.host_name(instance))
