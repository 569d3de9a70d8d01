"""The host's image cache: verified copies of catalog images, fetched from the controller on demand.

An entry is `<cache>/<sha256>`: the file whose content has that sha256, checked while it was
downloaded and before it got that name, so a partial or corrupt download never becomes an entry.
A download goes to `<cache>/.partial-<sha256>-<random>` (sha256 and size computed as the bytes
arrive), is fsynced, then renamed into place; on any error, or a size or checksum that is not the
catalog's, the partial file is removed and the caller gets the reason. Partial files left by an
agent killed mid-download are removed when the cache opens. Concurrent requests for one image
share one download. The controller serves images at `GET /v1/agent/images/{id}/file`, over
HTTPS checked against the cluster CA, to agent-role tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Protocol

import httpx

from ferry.agent.drivers.base import DriverError, ImageSpec

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PARTIAL = ".partial-"


class ImageFetcher(Protocol):
    async def ensure(self, image: ImageSpec) -> Path:
        """The local path of `image`, verified, fetching it first when it is not cached."""


class ImageCache:
    def __init__(self, directory: Path, client: httpx.AsyncClient) -> None:
        self.directory = directory
        self.client = client
        self._fetching: dict[str, asyncio.Lock] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f"{PARTIAL}*"):
            log.info("removing an unfinished download: %s", stale.name)
            stale.unlink(missing_ok=True)

    def path(self, image: ImageSpec) -> Path:
        return self.directory / image.sha256

    def cached(self, image: ImageSpec) -> bool:
        """True when the entry is there with the catalog's size (its content was verified
        before it got its name)."""
        try:
            return self.path(image).stat().st_size == image.size_bytes
        except FileNotFoundError:
            return False

    async def ensure(self, image: ImageSpec) -> Path:
        async with self._fetching.setdefault(image.sha256, asyncio.Lock()):
            if not self.cached(image):
                self.path(image).unlink(missing_ok=True)  # a wrong size: fetch it again
                await self._download(image)
        return self.path(image)

    async def _download(self, image: ImageSpec) -> None:
        partial = self.directory / f"{PARTIAL}{image.sha256}-{secrets.token_hex(4)}"
        try:
            await self._receive(image, partial)
            partial.replace(self.path(image))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        log.info(
            "image %s cached (%d bytes, sha256 %s)", image.name, image.size_bytes, image.sha256
        )

    async def _receive(self, image: ImageSpec, partial: Path) -> None:
        digest, size = hashlib.sha256(), 0
        url = f"/v1/agent/images/{image.id}/file"
        try:
            async with self.client.stream("GET", url, timeout=httpx.Timeout(30, read=60)) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise DriverError(
                        f"image {image.name}: the controller answered {resp.status_code} "
                        f"{resp.text[:200]}"
                    )
                with partial.open("wb") as out:
                    async for chunk in resp.aiter_bytes(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        if size > image.size_bytes:
                            break
                        await asyncio.to_thread(out.write, chunk)
                    await asyncio.to_thread(_sync, out.fileno())
        except httpx.HTTPError as exc:
            raise DriverError(f"image {image.name}: download failed: {exc!r}") from exc
        if size != image.size_bytes:
            raise DriverError(
                f"image {image.name}: received {size} bytes or more, the catalog says "
                f"{image.size_bytes}; not used"
            )
        if digest.hexdigest() != image.sha256:
            raise DriverError(
                f"image {image.name}: checksum mismatch (got sha256 {digest.hexdigest()}, "
                f"the catalog says {image.sha256}); not used"
            )


def _sync(fd: int) -> None:
    os.fsync(fd)
