"""Run one controller under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from ferry.api.app import create_app
from ferry.config import ControllerSettings, parse_listen


def run(settings: ControllerSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host, port = parse_listen(settings.listen)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=3,
        access_log=False,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    asyncio.run(uvicorn.Server(config).serve())
