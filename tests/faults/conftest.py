"""Fixtures of the fault tests: the API tests' in-process controller (`launch`), and a fake
cluster of real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ferry.faults.cluster import FakeCluster
from tests.api.conftest import heartbeat_interval, launch

__all__ = ["heartbeat_interval", "launch"]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[FakeCluster]:
    """A controller and two fake-driver agents, a flavor and a network."""
    running = FakeCluster(tmp_path, hosts=2)
    try:
        await running.start()
        await running.call("POST", "/v1/flavors", json={"name": "tiny", "vcpus": 1, "ram_mb": 128})
        await running.call(
            "POST", "/v1/networks", json={"name": "default", "cidr": "10.240.0.0/16"}
        )
        yield running
    finally:
        await running.stop()
