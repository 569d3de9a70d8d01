"""The fault hooks of a fake host on its agent API (see fake.py): served only when the agent
runs the fake driver, behind the same mutual TLS as the rest of the API (the controller's
certificate). Fault-injection runs (`ferry faults run`) use them to make a guest die, a
migration lose its other end, or the host's migration link go down and up.

  POST /v1/fake/guests/{id}/crash      the guest's QEMU dies -> {"target": bool, "stream": str}
  POST /v1/fake/guests/{id}/peer-lost  the other end of its migration vanished -> {"stream": str}
  POST /v1/fake/guests/{id}/arrive     the stream into this target completed: the guest runs
  PUT  /v1/fake/link {"up": bool}      the host's migration link down or up
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from ferry.agent.drivers.fake import FakeDriver


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    up: bool


def fault_routes(driver: FakeDriver) -> APIRouter:
    router = APIRouter(prefix="/v1/fake", tags=["fake host faults"])

    @router.post("/guests/{instance_id}/crash")
    async def crash(instance_id: str) -> dict[str, Any]:
        return asdict(driver.crash(instance_id))

    @router.post("/guests/{instance_id}/peer-lost")
    async def peer_lost(instance_id: str) -> dict[str, str]:
        return {"stream": driver.peer_lost(instance_id)}

    @router.post("/guests/{instance_id}/arrive", status_code=204)
    async def arrive(instance_id: str) -> Response:
        driver.arrive(instance_id)
        return Response(status_code=204)

    @router.put("/link")
    async def link(body: LinkIn) -> dict[str, bool]:
        driver.set_link(up=body.up)
        return {"up": driver.link_up}

    return router
