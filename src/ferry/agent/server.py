"""The agent's HTTPS API, for the controller only (mutual TLS pinned to its certificate)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ferry import __version__
from ferry.agent.dhcp import DhcpServer
from ferry.agent.drivers.base import (
    DiskCopy,
    DiskSpec,
    Driver,
    DriverError,
    GuestSpec,
    GuestStatus,
    ImageSpec,
    MigrationChannel,
    MigrationParams,
    PortSpec,
)
from ferry.agent.drivers.fake import FakeDriver
from ferry.agent.drivers.fake_faults import fault_routes
from ferry.protocol import (
    GuestReport,
    GuestSpecIn,
    IncomingIn,
    MigrateIn,
    MigrationParamsIn,
    MigrationProgressOut,
    TuneIn,
)


def report(status: GuestStatus) -> GuestReport:
    return GuestReport(
        id=status.id,
        name=status.name,
        power=status.power.value,
        pid=status.pid,
        detail=status.detail[:512],
    )


def to_spec(body: GuestSpecIn) -> GuestSpec:
    ports = tuple(PortSpec(p.network, p.mac, p.ip, p.gateway) for p in body.ports)
    disk = None
    if body.disk is not None:
        image = ImageSpec(**body.disk.image.model_dump())
        disk = DiskSpec(image, body.disk.size_bytes)
    return GuestSpec(
        body.id,
        body.name,
        body.vcpus,
        body.ram_mb,
        ports,
        body.dirty_rate_mbps,
        disk,
        body.disk_write_kibps,
    )


def _params(body: MigrationParamsIn) -> MigrationParams:
    return MigrationParams(
        body.max_bandwidth_bytes, body.downtime_limit_ms, body.auto_converge, body.postcopy
    )


def create_agent_app(driver: Driver, host: str, dhcp: Sequence[DhcpServer] = ()) -> FastAPI:
    """The agent's API over `driver`; a guest it starts or receives gets its DHCP lease from
    this host's `dhcp` servers at once."""
    app = FastAPI(title=f"Ferry agent {host}", version=__version__)

    def serve_leases(spec: GuestSpec) -> None:
        for server in dhcp:
            server.add_ports(spec.name, spec.ports)

    @app.exception_handler(DriverError)
    async def _driver_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "driver", "message": str(exc)}, status_code=409)

    @app.get("/v1/facts")
    async def facts() -> dict[str, Any]:
        return {"host": host, "driver": driver.name, **asdict(await driver.facts())}

    @app.get("/v1/disks")
    async def disks() -> dict[str, Any]:
        """The instance disks on this host's storage (on shared storage, the pool's)."""
        inventory = await driver.disks()
        return {"storage": asdict(inventory) if inventory else None}

    @app.get("/v1/guests", response_model=list[GuestReport])
    async def guests() -> list[GuestReport]:
        return [report(g) for g in await driver.list()]

    @app.post("/v1/guests", response_model=GuestReport, status_code=201)
    async def spawn(body: GuestSpecIn) -> GuestReport:
        spec = to_spec(body)
        serve_leases(spec)
        return report(await driver.spawn(spec))

    @app.post("/v1/guests/{instance_id}/incoming", response_model=GuestReport, status_code=201)
    async def incoming(instance_id: str, body: IncomingIn) -> GuestReport:
        spec = to_spec(body.spec)
        if spec.id != instance_id:
            raise DriverError(f"spec id {spec.id} does not match {instance_id}")
        serve_leases(spec)
        disk = DiskCopy(body.disk.port, body.disk.source_host) if body.disk else None
        return report(await driver.prepare_incoming(spec, body.port, _params(body.params), disk))

    @app.delete("/v1/guests/{instance_id}", status_code=204)
    async def destroy(instance_id: str) -> Response:
        await driver.destroy(instance_id)
        return Response(status_code=204)

    app.include_router(migration_routes(driver))
    if isinstance(driver, FakeDriver):  # simulated hosts only: faults on demand
        app.include_router(fault_routes(driver))
    return app


def migration_routes(driver: Driver) -> APIRouter:
    """The steps of a live migration after the destination is prepared (`incoming`): the
    source's stream, its progress and tuning, both ends' finish, and the aborts."""
    router = APIRouter()

    @router.post("/v1/guests/{instance_id}/migrate", status_code=202)
    async def migrate(instance_id: str, body: MigrateIn) -> Response:
        channel = MigrationChannel(body.address, body.port, body.tls_hostname, body.disk_port)
        await driver.migrate(instance_id, channel, _params(body.params))
        return Response(status_code=202)

    @router.get("/v1/guests/{instance_id}/migration", response_model=MigrationProgressOut)
    async def migration(instance_id: str) -> MigrationProgressOut:
        progress = await driver.migration_status(instance_id)
        return MigrationProgressOut(**asdict(progress))

    @router.post("/v1/guests/{instance_id}/migration/tune", status_code=204)
    async def tune(instance_id: str, body: TuneIn) -> Response:
        await driver.tune_migration(
            instance_id,
            downtime_limit_ms=body.downtime_limit_ms,
            max_bandwidth_bytes=body.max_bandwidth_bytes,
            start_postcopy=body.start_postcopy,
        )
        return Response(status_code=204)

    @router.post(
        "/v1/guests/{instance_id}/migration/finish-destination", response_model=GuestReport
    )
    async def finish_destination(instance_id: str) -> GuestReport:
        return report(await driver.finish_destination(instance_id))

    @router.post("/v1/guests/{instance_id}/migration/finish-source", status_code=204)
    async def finish_source(instance_id: str) -> Response:
        await driver.finish_source(instance_id)
        return Response(status_code=204)

    @router.post("/v1/guests/{instance_id}/migration/abort", status_code=204)
    async def abort(instance_id: str, role: Literal["source", "destination"]) -> Response:
        await driver.abort_migration(instance_id, source=role == "source")
        return Response(status_code=204)

    return router
