"""The CLI shows a local disk's copy beside the RAM: `ferry instance migrate --wait`, `ferry
migration show|list` and a drain followed with `ferry host maintenance enter --wait`, the
installed script against a controller over HTTPS and four fake-driver agents: host1 and host2
on local storage (a disk moves with its instance), host3 and host4 sharing a pool (RAM only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.live import Cli, json_of, rows
from tests.functional.cluster import TlsCluster, wait_until

# The flavor's 1 GiB disk: 256 MiB allocated (the fake's quarter), 4 s at 64 MiB/s; the RAM 2 s.
SLOW = "max_bandwidth_mib=64"


def _shared(cluster: TlsCluster, name: str) -> Path:
    """An agent's config on the cluster's shared pool p1."""
    config = cluster.agent_config(name)
    pool, cache = cluster.root / "pool", cluster.root / name / "images"
    with config.open("a") as toml:
        toml.write(f'[storage]\nkind = "shared"\npool = "p1"\npath = "{pool}"\n')
        toml.write(f'image_cache = "{cache}"\n')
    return config


def _image(cluster: TlsCluster, path: Path) -> None:
    path.write_bytes(os.urandom(4096) + bytes(1 << 20))
    response = httpx.post(
        f"{cluster.url}/v1/images",
        params={"name": "img", "format": "raw"},
        content=path.read_bytes(),
        headers={"Authorization": f"Bearer {cluster.admin}"},
        verify=cluster.client_tls(),
        timeout=60,
    )
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    running = TlsCluster(tmp_path_factory.mktemp("disks"))
    running.start_controller()
    try:
        for name in ("host1", "host2"):
            running.start_agent(running.agent_config(name))
        for name in ("host3", "host4"):
            running.start_agent(_shared(running, name))
        wait_until(lambda: len(running.api("GET", "/v1/hosts?liveness=up")) == 4, what="hosts")
        flavor = {"name": "d1", "vcpus": 1, "ram_mb": 128, "disk_gb": 1}
        running.api("POST", "/v1/flavors", json=flavor)
        running.api("POST", "/v1/networks", json={"name": "default", "cidr": "198.19.0.0/16"})
        _image(running, running.root / "img.raw")
        for name, host in (("disky", "host1"), ("pooled", "host3")):
            body = {"name": name, "flavor": "d1", "network": "default", "host": host}
            running.api("POST", "/v1/instances", json=body | {"image": "img"})
        for name in ("disky", "pooled"):
            wait_until(
                lambda n=name: running.api("GET", f"/v1/instances/{n}")["state"] == "running",
                timeout=60,
                what=f"{name} running",
            )
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def cli(cluster: TlsCluster) -> Cli:
    return Cli(cluster.url, cluster.admin, {"FERRY_CA": str(cluster.pki / "ca-cert.pem")})


def test_migrate_wait_show_and_list_show_the_disk_beside_the_ram(cli: Cli) -> None:
    out = cli("instance", "migrate", "disky", "--wait", "--policy", SLOW).stdout
    progress = [line for line in out.splitlines() if line.startswith("disky host1 -> host2: ")]
    copying = [line for line in progress if "copying the disk first disk " in line]
    assert copying, out  # the RAM waits for the disk, whose bytes count up
    assert all(line.endswith(" Mbit/s") and "/256 MiB" in line for line in copying), copying
    assert any(" disk 256/256 MiB in sync" in line and " pass " in line for line in progress)
    summary = dict(line.split(None, 1) for line in out.splitlines()[len(progress) :] if line)
    assert summary["state"] == "completed"
    assert summary["disk"] == "256 of 256 MiB copied, 0 MiB remaining, in sync"
    assert summary["memory"].startswith("128 of 128 MiB sent")

    out = cli("instance", "migrate", "pooled", "--wait", "--policy", SLOW).stdout
    assert "disk" not in out, out  # a shared pool's disk stays where it is
    assert "pooled host3 -> host4: " in out and "state" in out

    listed = {m["instance"]: m for m in json_of(cli, "migration", "list")}
    assert listed["disky"]["disk"]["ready"] is True and listed["pooled"]["disk"] is None
    shown = dict(
        line.split(None, 1)
        for line in cli("migration", "show", listed["disky"]["id"]).stdout.splitlines()
    )
    assert shown["disk"].startswith("256 of 256 MiB copied")
    assert "disk" not in cli("migration", "show", listed["pooled"]["id"]).stdout
    table = rows(cli("migration", "list").stdout)
    assert table[0][:7] == ["ID", "INSTANCE", "FROM", "TO", "STATE", "SENT", "MiB"]
    assert table[0][7:9] == ["DISK", "MiB"]
    cells = {row[1]: row for row in table[1:]}
    assert cells["disky"][5:7] == ["128/128", "256/256"]
    assert cells["pooled"][5:7] == ["128/128", "-"]


def test_a_followed_drain_shows_disk_bytes_apart_from_the_ram(cli: Cli) -> None:
    where = {n: json_of(cli, "instance", "show", n)["host"] for n in ("disky", "pooled")}
    policy = f"migration.{SLOW}"
    out = cli(
        "host", "maintenance", "enter", where["disky"], "--reason", "disk", "--wait",
        "--policy", policy,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert any(line.startswith("disky -> ") and " disk " in line for line in lines), out
    assert any(line.endswith(" disk 256/256 MiB in sync") for line in lines), out
    header = next(row for row in rows(out) if row[:2] == ["INSTANCE", "TO"])
    assert header[-5:] == ["SENT", "MiB", "DISK", "MiB", "ERROR"]
    disky = next(row for row in rows(out) if row[:1] == ["disky"] and "->" not in row)
    assert disky[-2:] == ["128", "256/256"]
    assert "RAM 128 of 128 MiB sent, disk 256 of 256 MiB copied" in out

    out = cli(
        "host", "maintenance", "enter", where["pooled"], "--reason", "pool", "--wait",
        "--policy", policy,
    ).stdout  # fmt: skip
    assert " disk " not in out and "; RAM 128 of 128 MiB sent" in out, out
    pooled = next(row for row in rows(out) if row[:1] == ["pooled"] and "->" not in row)
    assert pooled[-2:] == ["128", "-"]
    status = cli("host", "maintenance", "status", where["disky"]).stdout
    assert "disk 256 of 256 MiB copied" in status
