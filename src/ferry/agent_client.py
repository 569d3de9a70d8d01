"""The controller's HTTPS client for agents: mutual TLS with the controller's certificate."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from ferry.protocol import (
    DiskStorage,
    GuestReport,
    GuestSpecIn,
    IncomingIn,
    MigrateIn,
    MigrationProgressOut,
    TuneIn,
)


class AgentUnavailable(Exception):
    """The agent could not be reached or refused; the message says which and why. `refused`:
    the agent answered with an error (else the call did not get an answer: a connection that
    failed, dropped or timed out, after which the agent may still be doing what was asked)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


CONNECT_TIMEOUT = 10.0


class AgentClient:
    """`timeout`: how long a call may take (starting an incoming QEMU, waiting out a switchover).
    Reaching the agent (TCP and TLS) is bounded by CONNECT_TIMEOUT: a host whose network is gone
    drops the connection attempt silently, and every migration through it would otherwise wait
    the whole call timeout before it can be unwound or marked as waiting."""

    def __init__(self, tls: ssl.SSLContext | None, timeout: float = 60.0) -> None:
        self.tls = tls
        limits = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
        self._http = httpx.AsyncClient(verify=tls or False, timeout=limits) if tls else None

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self._http is None:
            raise AgentUnavailable(
                "the controller has no TLS credentials (tls_cert, tls_key, tls_ca) to reach agents"
            )
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise AgentUnavailable(f"agent at {url} unreachable: {exc}") from exc
        if response.is_error:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise AgentUnavailable(
                f"agent refused ({response.status_code}): {message}", refused=True
            )
        return response

    async def spawn(self, agent_url: str, spec: GuestSpecIn) -> GuestReport:
        response = await self._call("POST", f"{agent_url}/v1/guests", json=spec.model_dump())
        return GuestReport.model_validate(response.json())

    async def destroy(self, agent_url: str, instance_id: str) -> None:
        await self._call("DELETE", f"{agent_url}/v1/guests/{instance_id}")

    async def guests(self, agent_url: str) -> list[GuestReport]:
        response = await self._call("GET", f"{agent_url}/v1/guests")
        return [GuestReport.model_validate(g) for g in response.json()]

    async def guest(self, agent_url: str, instance_id: str) -> GuestReport | None:
        """The instance as this agent's host has it, or None when the host holds no copy."""
        return next((g for g in await self.guests(agent_url) if g.id == instance_id), None)

    async def disks(self, agent_url: str) -> DiskStorage | None:
        """The instance disks on the agent's host's storage, or None when it has none."""
        response = await self._call("GET", f"{agent_url}/v1/disks")
        storage = response.json().get("storage")
        return DiskStorage.model_validate(storage) if storage is not None else None

    async def incoming(self, agent_url: str, body: IncomingIn) -> GuestReport:
        url = f"{agent_url}/v1/guests/{body.spec.id}/incoming"
        response = await self._call("POST", url, json=body.model_dump())
        return GuestReport.model_validate(response.json())

    async def migrate(self, agent_url: str, instance_id: str, body: MigrateIn) -> None:
        await self._call(
            "POST", f"{agent_url}/v1/guests/{instance_id}/migrate", json=body.model_dump()
        )

    async def progress(self, agent_url: str, instance_id: str) -> MigrationProgressOut:
        response = await self._call("GET", f"{agent_url}/v1/guests/{instance_id}/migration")
        return MigrationProgressOut.model_validate(response.json())

    async def tune(self, agent_url: str, instance_id: str, body: TuneIn) -> None:
        await self._call(
            "POST", f"{agent_url}/v1/guests/{instance_id}/migration/tune", json=body.model_dump()
        )

    async def finish_destination(self, agent_url: str, instance_id: str) -> GuestReport:
        url = f"{agent_url}/v1/guests/{instance_id}/migration/finish-destination"
        return GuestReport.model_validate((await self._call("POST", url)).json())

    async def finish_source(self, agent_url: str, instance_id: str) -> None:
        await self._call("POST", f"{agent_url}/v1/guests/{instance_id}/migration/finish-source")

    async def abort(self, agent_url: str, instance_id: str, *, source: bool) -> None:
        role = "source" if source else "destination"
        await self._call(
            "POST", f"{agent_url}/v1/guests/{instance_id}/migration/abort", params={"role": role}
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
