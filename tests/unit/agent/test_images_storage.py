"""The host's image cache and disk store: a download becomes a cache entry only when its size and
sha256 are the catalog's, partial files never survive, and a disk is made once and never
replaced (qemu-img, for real)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferry.agent.config import StorageSettings
from ferry.agent.drivers.base import DiskSpec, DriverError, ImageSpec
from ferry.agent.images import PARTIAL, ImageCache
from ferry.agent.storage import DiskStore

CONTENT = b"ferry image bytes " * 1000
IMAGE = ImageSpec(
    "0e3c9a52-0000-4000-8000-00000000000a",
    "lab",
    "raw",
    len(CONTENT),
    len(CONTENT),
    hashlib.sha256(CONTENT).hexdigest(),
)


def served(body: bytes, status: int = 200, calls: list[str] | None = None) -> httpx.AsyncClient:
    async def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(request.url.path)
        return httpx.Response(status, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="https://ctl")


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


async def test_a_verified_download_becomes_the_entry_and_is_fetched_once(tmp_path: Path) -> None:
    calls: list[str] = []
    cache = ImageCache(tmp_path, served(CONTENT, calls=calls))
    path = await cache.ensure(IMAGE)
    assert path == tmp_path / IMAGE.sha256 and path.read_bytes() == CONTENT
    await cache.ensure(IMAGE)
    assert calls == [f"/v1/agent/images/{IMAGE.id}/file"]
    assert leftovers(tmp_path) == [IMAGE.sha256]


async def test_concurrent_starts_share_one_download(tmp_path: Path) -> None:
    calls: list[str] = []
    cache = ImageCache(tmp_path, served(CONTENT, calls=calls))
    await asyncio.gather(*(cache.ensure(IMAGE) for _ in range(5)))
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (CONTENT[:-1] + b"X", "checksum mismatch"),
        (CONTENT[:-10], "received 17990 bytes"),
        (CONTENT + b"more", "bytes or more"),
    ],
)
async def test_a_corrupt_download_is_never_used(tmp_path: Path, body: bytes, message: str) -> None:
    cache = ImageCache(tmp_path, served(body))
    with pytest.raises(DriverError, match=message):
        await cache.ensure(IMAGE)
    assert leftovers(tmp_path) == []  # no entry, no partial file
    assert not cache.cached(IMAGE)


async def test_a_refused_download_says_what_the_controller_said(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, served(b'{"message": "no such image"}', status=404))
    with pytest.raises(DriverError, match="answered 404"):
        await cache.ensure(IMAGE)
    assert leftovers(tmp_path) == []


async def test_partial_files_of_a_killed_agent_are_removed_and_a_wrong_size_refetched(
    tmp_path: Path,
) -> None:
    (tmp_path / f"{PARTIAL}{IMAGE.sha256}-dead").write_bytes(CONTENT[:100])
    (tmp_path / IMAGE.sha256).write_bytes(b"truncated")
    cache = ImageCache(tmp_path, served(CONTENT))
    assert leftovers(tmp_path) == [IMAGE.sha256]  # the partial file went when the cache opened
    assert not cache.cached(IMAGE)
    assert (await cache.ensure(IMAGE)).read_bytes() == CONTENT


@pytest.fixture
def qcow2_base(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    yield base


def info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True
    )
    loaded: dict[str, object] = json.loads(out.stdout)
    return loaded


async def test_a_disk_is_an_overlay_made_once(tmp_path: Path, qcow2_base: Path) -> None:
    store = DiskStore(StorageSettings(path=tmp_path / "disks", image_cache=tmp_path / "images"))
    image = ImageSpec(IMAGE.id, "base", "qcow2", 1, 64 << 20, IMAGE.sha256)
    path = await store.create("vm-1", DiskSpec(image, 1 << 30), qcow2_base)
    details = info(path)
    assert details["format"] == "qcow2" and details["virtual-size"] == 1 << 30
    assert details["backing-filename"] == str(qcow2_base)
    inode = path.stat().st_ino
    again = await store.create("vm-1", DiskSpec(image, 2 << 30), qcow2_base)
    assert again == path and path.stat().st_ino == inode
    assert info(path)["virtual-size"] == 1 << 30
    small = await store.create("vm-2", DiskSpec(image, 1 << 20), qcow2_base)
    assert info(small)["virtual-size"] == 64 << 20  # never smaller than the image
    store.remove("vm-1")
    assert not store.exists("vm-1") and store.exists("vm-2")


async def test_a_disk_that_cannot_be_made_leaves_nothing(tmp_path: Path, qcow2_base: Path) -> None:
    store = DiskStore(StorageSettings(path=tmp_path / "disks", image_cache=tmp_path / "images"))
    image = ImageSpec(IMAGE.id, "base", "qcow2", 1, 64 << 20, IMAGE.sha256)
    with pytest.raises(DriverError, match="cannot create the disk of vm-1"):
        await store.create("vm-1", DiskSpec(image, 1 << 30), tmp_path / "missing.qcow2")
    assert not store.exists("vm-1")
    assert list((tmp_path / "disks" / "vm-1").iterdir()) == []


async def test_local_storage_lists_each_disks_allocated_bytes(
    tmp_path: Path, qcow2_base: Path
) -> None:
    """What moving a local disk copies: the overlay's allocated data, not its virtual size; it
    grows with what the guest writes. Shared storage lists none (its disks stay put)."""
    store = DiskStore(StorageSettings(path=tmp_path / "disks", image_cache=tmp_path / "images"))
    image = ImageSpec(IMAGE.id, "base", "qcow2", 1, 64 << 20, IMAGE.sha256)
    path = await store.create("vm-1", DiskSpec(image, 1 << 30), qcow2_base)
    fresh = store.inventory().allocated["vm-1"]
    assert 0 < fresh < 1 << 20
    write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", str(path)]
    await asyncio.to_thread(subprocess.run, write, check=True, capture_output=True)
    written = store.inventory().allocated["vm-1"]
    assert 8 << 20 <= written < (8 << 20) + (1 << 20)
    pool = StorageSettings(
        kind="shared", pool="p1", path=tmp_path / "disks", image_cache=tmp_path / "images"
    )
    shared = DiskStore(pool).inventory()
    assert shared.instance_ids == ["vm-1"] and shared.allocated == {}
