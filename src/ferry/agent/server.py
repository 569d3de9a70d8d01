"""The agent's HTTPS API, for the controller only (mutual TLS pinned to its certificate)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ferry import __version__
from ferry.agent.drivers.base import Driver, DriverError, GuestSpec, GuestStatus, PortSpec
from ferry.protocol import GuestReport, GuestSpecIn


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
    return GuestSpec(body.id, body.name, body.vcpus, body.ram_mb, ports, body.dirty_rate_mbps)


def create_agent_app(driver: Driver, host: str) -> FastAPI:
    app = FastAPI(title=f"Ferry agent {host}", version=__version__)

    @app.exception_handler(DriverError)
    async def _driver_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "driver", "message": str(exc)}, status_code=409)

    @app.get("/v1/facts")
    async def facts() -> dict[str, Any]:
        return {"host": host, "driver": driver.name, **asdict(await driver.facts())}

    @app.get("/v1/guests", response_model=list[GuestReport])
    async def guests() -> list[GuestReport]:
        return [report(g) for g in await driver.list()]

    @app.post("/v1/guests", response_model=GuestReport, status_code=201)
    async def spawn(body: GuestSpecIn) -> GuestReport:
        return report(await driver.spawn(to_spec(body)))

    @app.delete("/v1/guests/{instance_id}", status_code=204)
    async def destroy(instance_id: str) -> Response:
        await driver.destroy(instance_id)
        return Response(status_code=204)

    return app
