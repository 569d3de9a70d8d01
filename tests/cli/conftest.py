from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.live import Cli, LiveController


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[LiveController]:
    live = LiveController(tmp_path / "state")
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
