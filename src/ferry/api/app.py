"""The FastAPI application of one controller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ferry import __version__
from ferry.api import dashboard, errors
from ferry.api.routers import (
    agent,
    events,
    health,
    hosts,
    images,
    instances,
    metrics,
    migrations,
    server_groups,
    tokens,
    webhooks,
    whoami,
)
from ferry.config import ControllerSettings
from ferry.controller.runtime import Controller


def create_app(settings: ControllerSettings) -> FastAPI:
    controller = Controller(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await controller.start()
        try:
            yield
        finally:
            await controller.stop()

    app = FastAPI(
        title="Ferry",
        version=__version__,
        description="Host maintenance for QEMU/KVM clouds.",
        lifespan=lifespan,
    )
    app.state.controller = controller
    errors.install(app)
    for module in (
        health,
        hosts,
        instances,
        images,
        server_groups,
        migrations,
        agent,
        events,
        tokens,
        webhooks,
        whoami,
        metrics,
    ):
        app.include_router(module.router)
    dashboard.install(app)
    return app
