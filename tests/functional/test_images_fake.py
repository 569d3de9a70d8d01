"""An image reaches a host's cache through the real path: controller over HTTPS, agent process
(fake driver) with its agent token. An agent killed mid-download leaves a partial file that
never becomes a cache entry; restarted, it removes it, fetches the image again, checks it and
starts the instance. Deleting the instance removes its disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.functional.cluster import TlsCluster, started, wait_until

SIZE = 512 << 20  # long enough to be caught mid-download on loopback


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TlsCluster]:
    with started(tmp_path) as running:
        yield running


def _image(cluster: TlsCluster, path: Path) -> str:
    with path.open("wb") as out:
        out.write(os.urandom(4096))  # zeros after: quick to make, served like any bytes
        out.truncate(SIZE)
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    with path.open("rb") as body:
        response = httpx.post(
            f"{cluster.url}/v1/images",
            params={"name": "big", "format": "raw"},
            content=body,
            headers={
                "Authorization": f"Bearer {cluster.admin}",
                "Content-Type": "application/octet-stream",
            },
            verify=cluster.client_tls(),
            timeout=120,
        )
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == digest.hexdigest()
    return digest.hexdigest()


def _partial(cache: Path) -> bool:
    return cache.is_dir() and any(p.name.startswith(".partial-") for p in cache.iterdir())


def test_an_agent_killed_mid_download_recovers(cluster: TlsCluster, tmp_path: Path) -> None:
    config = cluster.agent_config("host1")
    agent = cluster.start_agent(config)
    wait_until(lambda: cluster.api("GET", "/v1/hosts"), what="registration")
    sha = _image(cluster, tmp_path / "big.raw")
    cluster.api("POST", "/v1/flavors", json={"name": "d1", "vcpus": 1, "ram_mb": 128, "disk_gb": 1})
    cluster.api("POST", "/v1/networks", json={"name": "default", "cidr": "198.19.0.0/16"})
    cache = cluster.root / "host1" / "images"
    created = cluster.api(
        "POST",
        "/v1/instances",
        json={"name": "vm1", "flavor": "d1", "network": "default", "image": "big"},
    )
    deadline = time.monotonic() + 60
    while not _partial(cache):
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.002)
    agent.stop(signal.SIGKILL)  # mid-download
    assert _partial(cache) and not (cache / sha).exists()
    assert cluster.api("GET", "/v1/instances/vm1")["state"] == "building"

    cluster.start_agent(config)
    wait_until(
        lambda: cluster.api("GET", "/v1/instances/vm1")["state"] == "running",
        timeout=120,
        what="vm1 running after the agent's restart",
    )
    assert sorted(p.name for p in cache.iterdir()) == [sha]  # the entry, no partial file
    digest = hashlib.sha256()
    with (cache / sha).open("rb") as entry:
        while chunk := entry.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == sha
    disk = cluster.root / "host1" / "disks" / created["id"] / "disk.qcow2"
    assert json.loads(disk.read_text())["image"] == sha

    cluster.api("DELETE", "/v1/instances/vm1")
    wait_until(lambda: not disk.exists(), timeout=60, what="the disk removed with its instance")
