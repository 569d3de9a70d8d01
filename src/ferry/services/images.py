"""The image catalog: image files the controller stores, measures and checks itself, and serves
to agents.

An upload streams to a temporary file in the images directory while its size and SHA-256 are
computed (never taken from the caller), then `qemu-img info` reads its virtual size and checks
that it is what the caller declared and self-contained; only then is the file renamed to its id
and the row recorded, in one transaction. A refused, failed or interrupted upload leaves neither
a file nor a row; files a crash left behind are swept when the controller starts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Image, Instance, new_id
from ferry.domain.errors import Conflict, InvalidInput, NotFound, TooLarge, Unavailable
from ferry.domain.events import EventKind
from ferry.domain.instance import InstanceState
from ferry.services.catalog import _name
from ferry.services.store import Store, record

log = logging.getLogger(__name__)

FORMATS = ("qcow2", "raw")
QCOW2_MAGIC = b"QFI\xfb"
GIB = 1 << 30
WRITE_BYTES = 1 << 20  # chunks are hashed and written in a thread once this much is waiting
QEMU_IMG_TIMEOUT_S = 30.0
UPLOAD_PREFIX = ".upload-"
_IMAGE_FILE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def size_text(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


async def get_image(session: AsyncSession, name: str) -> Image:
    image = await session.scalar(select(Image).where(Image.name == name))
    if image is None:
        raise NotFound(f"no image named {name!r}")
    return image


async def _qemu_img_info(path: Path, fmt: str | None) -> tuple[int, dict[str, Any], str]:
    """`qemu-img info --output=json [-f fmt] path`: exit status, the JSON, qemu-img's error."""
    args = ["info", "--output=json", *(["-f", fmt] if fmt else []), str(path)]
    try:
        proc = await asyncio.create_subprocess_exec(
            "qemu-img",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise Unavailable("cannot check images: qemu-img is not installed (qemu-utils)") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), QEMU_IMG_TIMEOUT_S)
    except TimeoutError:
        raise InvalidInput(
            f"qemu-img could not read the file within {QEMU_IMG_TIMEOUT_S:g} s"
        ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # qemu-img names the file it read: the temporary path means nothing to the caller.
    error = err.decode(errors="replace").replace(str(path), "the file").strip()
    error = error.splitlines()[-1].removeprefix("qemu-img: ") if error else "no details"
    if proc.returncode != 0:
        return proc.returncode or 1, {}, error
    try:
        info = json.loads(out)
    except ValueError:
        return 1, {}, "qemu-img answered no JSON"
    return 0, info if isinstance(info, dict) else {}, error


async def inspect(path: Path, fmt: str, head: bytes) -> int:
    """The virtual size of the image at `path`, declared `fmt`; InvalidInput when it is not
    such an image or not self-contained."""
    if fmt == "raw" and head.startswith(QCOW2_MAGIC):
        raise InvalidInput("the file is a qcow2 image, not raw: upload it with format=qcow2")
    status, info, error = await _qemu_img_info(path, fmt)
    if status != 0:
        raise InvalidInput(f"the file is not a {fmt} image: {error}")
    if info.get("format") != fmt:
        raise InvalidInput(f"the file is not a {fmt} image (qemu-img reads {info.get('format')})")
    if fmt == "qcow2":
        backing = info.get("backing-filename")
        if backing:
            raise InvalidInput(
                f"the qcow2 image has a backing file ({backing!r}): images must be"
                " self-contained; flatten it first (qemu-img convert -O qcow2 IN OUT)"
            )
        data_file = ((info.get("format-specific") or {}).get("data") or {}).get("data-file")
        if data_file:
            raise InvalidInput(
                f"the qcow2 image keeps its data in an external file ({data_file!r}): images"
                " must be self-contained; convert it first (qemu-img convert -O qcow2 IN OUT)"
            )
    else:
        # Raw is what qemu-img reads anything as; a raw image must not look like another format.
        status, probed, error = await _qemu_img_info(path, None)
        if status != 0:
            raise InvalidInput(f"the file is not a raw image: {error}")
        if probed.get("format") != "raw":
            found = probed.get("format")
            raise InvalidInput(f"the file is a {found} image, not raw: upload it as {found}")
    virtual = info.get("virtual-size")
    if not isinstance(virtual, int) or virtual < 1:
        raise InvalidInput("the image has no virtual size: qemu-img reads an empty disk")
    return virtual


def _write(out: BinaryIO, digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        out.write(chunk)


def _finish(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


@dataclass(frozen=True)
class Received:
    size: int
    sha256: str
    head: bytes  # the first bytes, for the format's magic


class ImageService:
    def __init__(self, store: Store, directory: Path, max_bytes: int) -> None:
        self.store = store
        self.directory = directory
        self.max_bytes = max_bytes

    def path(self, image: Image) -> Path:
        return self.directory / image.id

    def _too_large(self) -> TooLarge:
        return TooLarge(
            f"the image is larger than the controller's limit of {size_text(self.max_bytes)}"
            f" ({self.max_bytes} bytes, setting image_max_bytes)"
        )

    async def create(
        self,
        name: str,
        fmt: str,
        content: AsyncIterable[bytes],
        actor: str,
        *,
        length: int | None = None,
    ) -> Image:
        """Store the image `content` streams as `name`; `length` is the size the caller
        announced (Content-Length), refused at once when over the limit."""
        _name("image", name)
        if fmt not in FORMATS:
            raise InvalidInput(f"invalid image format {fmt!r}: use qcow2 or raw")
        if length is not None and length > self.max_bytes:
            raise self._too_large()
        async with self.store.reading() as session:
            if await session.scalar(select(Image.id).where(Image.name == name)):
                raise Conflict(f"an image named {name!r} exists already")
        self.directory.mkdir(parents=True, exist_ok=True)
        image_id = new_id()
        partial = self.directory / f"{UPLOAD_PREFIX}{image_id}"
        final = self.directory / image_id
        try:
            got = await self._receive(content, partial)
            virtual = await inspect(partial, fmt, got.head)
            async with self.store.write() as session:
                if await session.scalar(select(Image.id).where(Image.name == name)):
                    raise Conflict(f"an image named {name!r} exists already")
                image = _add(session, image_id, name, fmt, got, virtual, actor)
                await session.flush()
                # In place before the commit: a crash in between leaves a file without a row,
                # which the next start sweeps; never a row without its file.
                partial.replace(final)
        except IntegrityError as exc:
            final.unlink(missing_ok=True)
            raise Conflict(f"an image named {name!r} exists already") from exc
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        finally:
            partial.unlink(missing_ok=True)
        return image

    async def _receive(self, content: AsyncIterable[bytes], partial: Path) -> Received:
        """Stream `content` to `partial`, hashing it on the way; the whole file is never in
        memory (hashing and writing run in a thread, a MiB at a time)."""
        digest = hashlib.sha256()
        size = 0
        head = b""
        waiting: list[bytes] = []
        waiting_bytes = 0
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "wb") as out:
            async for chunk in content:
                if not chunk:
                    continue
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large()
                if len(head) < len(QCOW2_MAGIC):
                    head += chunk[: len(QCOW2_MAGIC) - len(head)]
                waiting.append(chunk)
                waiting_bytes += len(chunk)
                if waiting_bytes >= WRITE_BYTES:
                    await asyncio.to_thread(_write, out, digest, waiting)
                    waiting, waiting_bytes = [], 0
            await asyncio.to_thread(_write, out, digest, waiting)
            await asyncio.to_thread(_finish, out)
        if size == 0:
            raise InvalidInput("the upload is empty: send the image file as the request body")
        return Received(size, digest.hexdigest(), head)

    async def all(self) -> list[Image]:
        async with self.store.reading() as session:
            return list((await session.scalars(select(Image).order_by(Image.name))).all())

    async def get(self, name: str) -> Image:
        async with self.store.reading() as session:
            return await get_image(session, name)

    async def file(self, image_id: str) -> tuple[Image, Path, os.stat_result]:
        """The image with id `image_id`, its file and the file's status, for a download."""
        async with self.store.reading() as session:
            image = await session.get(Image, image_id)
        if image is None:
            raise NotFound(f"no image with id {image_id!r}")
        path = self.path(image)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise NotFound(f"image {image.name}'s file is missing from the controller") from None
        return image, path, stat

    async def delete(self, name: str, actor: str) -> None:
        async with self.store.write() as session:
            image = await get_image(session, name)
            users = (
                await session.scalars(
                    select(Instance.name)
                    .where(
                        Instance.image_id == image.id,
                        Instance.state != InstanceState.DELETED.value,
                    )
                    .order_by(Instance.name)
                )
            ).all()
            if users:
                raise Conflict(
                    f"image {name!r} is in use by instance(s) {', '.join(users)}:"
                    " delete them first",
                    details={"instances": list(users)},
                )
            # Deleted instances that were made from it let go of it (ON DELETE SET NULL).
            await session.delete(image)
            record(
                session,
                EventKind.IMAGE_DELETED,
                actor,
                f"image {name} deleted",
                data={"image": name, "id": image.id},
            )
        # After the commit: a crash in between leaves a file without a row (swept at start).
        self.path(image).unlink(missing_ok=True)

    async def sweep(self) -> list[str]:
        """Remove what no row names: uploads a crash interrupted, files whose row never
        committed or was deleted. The file names removed."""
        if not self.directory.is_dir():
            return []
        async with self.store.reading() as session:
            known = set((await session.scalars(select(Image.id))).all())
        removed = []
        for entry in self.directory.iterdir():
            stray = entry.name.startswith(UPLOAD_PREFIX) or (
                _IMAGE_FILE.match(entry.name) is not None and entry.name not in known
            )
            if stray and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                removed.append(entry.name)
        for name in removed:
            log.warning(
                "removed %s from %s: no image of the catalog names it", name, self.directory
            )
        return removed


def _add(
    session: AsyncSession,
    image_id: str,
    name: str,
    fmt: str,
    got: Received,
    virtual: int,
    actor: str,
) -> Image:
    """The image's row and its `image.created` event, in the caller's transaction."""
    image = Image(
        id=image_id,
        name=name,
        format=fmt,
        size_bytes=got.size,
        virtual_size_bytes=virtual,
        sha256=got.sha256,
        created_by=actor,
    )
    session.add(image)
    record(
        session,
        EventKind.IMAGE_CREATED,
        actor,
        f"image {name} created: {fmt}, {size_text(got.size)}, virtual {size_text(virtual)}",
        data={
            "image": name,
            "id": image_id,
            "format": fmt,
            "size_bytes": got.size,
            "virtual_size_bytes": virtual,
            "sha256": got.sha256,
        },
    )
    return image
