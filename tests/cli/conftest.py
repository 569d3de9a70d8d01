from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.live import Cli, LiveController


@pytest.fixture
def controller(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveController]:
    """A controller process. A module may set HEARTBEAT_INTERVAL (e.g. 120, so hosts registered
    once stay up while nothing heartbeats for them, and the scheduler places on them)."""
    interval = getattr(request.module, "HEARTBEAT_INTERVAL", None)
    live = LiveController(
        tmp_path / "state", **({"heartbeat_interval": interval} if interval else {})
    )
    live.start()
    try:
        yield live
    finally:
        if live.process is not None:
            live.stop()


@pytest.fixture
def cli(controller: LiveController) -> Cli:
    return Cli(controller.url, controller.admin_token)


@pytest.fixture
def hosts(controller: LiveController) -> list[str]:
    names = ["host1", "host2", "host3"]
    controller.register(controller.token("agent", "agent"), *names)
    return names
