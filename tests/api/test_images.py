"""The image catalog: uploads measured by the controller (size, virtual size, SHA-256) and checked
with qemu-img, refusals that leave nothing behind, deletion guarded by the instances that use an
image, and the agents' download. Images are real: made with `qemu-img create` in tmp_path."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ferry.db.models import Image, Instance
from ferry.orchestrator.instances import guest_spec
from tests.api.conftest import Api, Launch, Token

MIB = 1 << 20
GIB = 1 << 30


def qcow2(path: Path, size: str = "16M", *options: str) -> bytes:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), size], check=True
    )
    return path.read_bytes()


def raw(path: Path, size: int = MIB) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def upload(
    api: Api,
    name: str,
    content: Any,
    fmt: str | None = "qcow2",
    token: Token | None = None,
    **params: str,
) -> httpx.Response:
    who = token or await api.token("operator")
    query = {"name": name, **({"format": fmt} if fmt else {}), **params}
    headers = {**who.headers, "Content-Type": "application/octet-stream"}
    return await api.client.post("/v1/images", params=query, content=content, headers=headers)


async def created(api: Api, name: str, content: bytes, fmt: str = "qcow2") -> dict[str, Any]:
    response = await upload(api, name, content, fmt)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored(api: Api) -> tuple[list[str], int]:
    """The files in the images directory and the rows of the images table."""
    directory = api.controller.settings.images_dir
    files = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    async with api.controller.db.reading() as session:
        rows = await session.scalar(select(func.count()).select_from(Image))
    return files, int(rows or 0)


async def test_upload_measures_a_qcow2_image(api: Api, tmp_path: Path) -> None:
    data = qcow2(tmp_path / "disk.qcow2", "16M")
    body = await created(api, "debian-12", data)
    assert body["name"] == "debian-12" and body["format"] == "qcow2"
    assert body["size_bytes"] == len(data)
    assert body["virtual_size_bytes"] == 16 * MIB
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["created_by"] == "operator-bot"
    assert (api.controller.settings.images_dir / body["id"]).read_bytes() == data
    assert await stored(api) == ([body["id"]], 1)

    reader = await api.token("reader")
    assert await api.ok("GET", "/v1/images", reader) == [body]
    assert await api.ok("GET", "/v1/images/debian-12", reader) == body
    (event,) = await api.events(kind="image")
    assert (event["kind"], event["actor"]) == ("image.created", "operator-bot")
    assert event["data"]["sha256"] == body["sha256"]


async def test_upload_measures_a_raw_image_streamed_in_chunks(api: Api, tmp_path: Path) -> None:
    data = raw(tmp_path / "disk.img", 3 * MIB + 5)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    response = await upload(api, "blank", chunks(), "raw")
    assert response.status_code == 201, response.text
    body = response.json()
    sectors = -(-len(data) // 512)  # qemu-img reads a raw disk in whole 512-byte sectors
    assert (body["format"], body["size_bytes"], body["virtual_size_bytes"]) == (
        "raw",
        len(data),
        sectors * 512,
    )
    assert body["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_callers_checksum_is_refused(api: Api, tmp_path: Path) -> None:
    data = qcow2(tmp_path / "disk.qcow2")
    response = await upload(api, "img", data, sha256="0" * 64)
    assert response.status_code == 422, response.text
    assert "unknown parameter(s) sha256" in response.json()["message"]
    assert "measures size, virtual size and SHA-256 itself" in response.json()["message"]
    assert await stored(api) == ([], 0)
    schema = (await api.client.get("/openapi.json")).json()
    parameters = schema["paths"]["/v1/images"]["post"]["parameters"]
    assert {p["name"] for p in parameters} == {"name", "format"}


async def test_the_declared_format_must_be_the_files(api: Api, tmp_path: Path) -> None:
    image = qcow2(tmp_path / "disk.qcow2")
    as_raw = await upload(api, "img", image, "raw")
    assert as_raw.status_code == 422
    assert as_raw.json()["message"] == (
        "the file is a qcow2 image, not raw: upload it with format=qcow2"
    )
    plain = raw(tmp_path / "disk.img")
    as_qcow2 = await upload(api, "img", plain, "qcow2")
    assert as_qcow2.status_code == 422
    message = as_qcow2.json()["message"]
    assert message.startswith("the file is not a qcow2 image: "), message
    assert str(api.controller.settings.images_dir) not in message  # no temporary path
    assert await stored(api) == ([], 0)
    assert await api.kinds(kind="image") == []


async def test_an_image_with_a_backing_file_is_refused(api: Api, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qcow2(base)
    overlay = qcow2(tmp_path / "overlay.qcow2", "16M", "-b", str(base), "-F", "qcow2")
    response = await upload(api, "overlay", overlay)
    assert response.status_code == 422
    message = response.json()["message"]
    assert "has a backing file" in message and "images must be self-contained" in message
    assert str(base) in message
    assert await stored(api) == ([], 0)


async def test_invalid_uploads(api: Api, tmp_path: Path) -> None:
    data = qcow2(tmp_path / "disk.qcow2")
    for name in ("Bad_Name", "-x", ""):
        response = await upload(api, name, data)
        assert response.status_code == 422, (name, response.text)
    empty = await upload(api, "empty", b"", "raw")
    assert empty.status_code == 422
    assert "the upload is empty" in empty.json()["message"]
    bad_format = await upload(api, "img", data, "vmdk")
    assert bad_format.status_code == 422
    await created(api, "img", data)
    duplicate = await upload(api, "img", data)
    assert duplicate.status_code == 409
    assert duplicate.json()["message"] == "an image named 'img' exists already"
    assert len((await stored(api))[0]) == 1
    missing = await api.call("GET", "/v1/images/nope", api.admin)
    assert missing.status_code == 404 and missing.json()["message"] == "no image named 'nope'"


async def test_format_defaults_to_qcow2(api: Api, tmp_path: Path) -> None:
    body = await created(api, "img", qcow2(tmp_path / "disk.qcow2"))
    assert body["format"] == "qcow2"
    response = await upload(api, "other", raw(tmp_path / "disk.img"), fmt=None)
    assert response.status_code == 422  # a raw file is not a qcow2 image


async def test_a_reader_cannot_create_or_delete(api: Api, tmp_path: Path) -> None:
    data = qcow2(tmp_path / "disk.qcow2")
    reader = await api.token("reader")
    response = await upload(api, "img", data, token=reader)
    assert response.status_code == 403
    assert "'reader'" in response.json()["message"]
    assert await stored(api) == ([], 0)
    await created(api, "img", data)
    assert (await api.call("DELETE", "/v1/images/img", reader)).status_code == 403
    assert len((await stored(api))[0]) == 1


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
async def test_too_large_is_refused_and_leaves_nothing(
    launch: Launch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, announced: bool
) -> None:
    monkeypatch.setenv("FERRY_IMAGE_MAX_BYTES", str(MIB))
    data = raw(tmp_path / "big.img", 2 * MIB)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    async with launch() as api:
        assert api.controller.settings.image_max_bytes == MIB
        response = await upload(api, "big", data if announced else chunks(), "raw")
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "too_large"
        assert response.json()["message"] == (
            "the image is larger than the controller's limit of 1.0 MiB"
            " (1048576 bytes, setting image_max_bytes)"
        )
        assert await stored(api) == ([], 0)
        assert await api.kinds(kind="image") == []
        small = raw(tmp_path / "small.img", MIB)  # exactly the limit is allowed
        assert (await upload(api, "small", small, "raw")).status_code == 201


async def test_an_interrupted_upload_leaves_nothing(api: Api, tmp_path: Path) -> None:
    """The client goes away halfway: the partial file is removed, no row is written."""
    operator = await api.token("operator")
    data = raw(tmp_path / "disk.img", 2 * MIB)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": data[:MIB], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/images",
        "raw_path": b"/v1/images",
        "root_path": "",
        "query_string": b"name=cut&format=raw",
        "headers": [
            (b"host", b"ferry.test"),
            (b"authorization", f"Bearer {operator.secret}".encode()),
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(data)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("ferry.test", 80),
    }
    await api.app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 422
    assert await stored(api) == ([], 0)


async def test_start_sweeps_what_a_crash_left(launch: Launch, tmp_path: Path) -> None:
    async with launch() as api:
        kept = await created(api, "kept", qcow2(tmp_path / "disk.qcow2"))
        directory = api.controller.settings.images_dir
    (directory / ".upload-0b7c8a52-3f8e-4a57-8f3e-2d2f3f7d1a11").write_bytes(b"partial")
    (directory / "0b7c8a52-3f8e-4a57-8f3e-2d2f3f7d1a12").write_bytes(b"never committed")
    async with launch() as api:
        assert await stored(api) == ([kept["id"]], 1)


async def _instance_setup(api: Api, disk_gb: int = 0) -> None:
    assert (await api.register("node-1")).status_code == 200
    await api.ok("POST", "/v1/flavors", api.admin, json={"name": "m1", "vcpus": 1, "ram_mb": 256})
    await api.ok(
        "POST",
        "/v1/flavors",
        api.admin,
        json={"name": "small", "vcpus": 1, "ram_mb": 256, "disk_gb": disk_gb},
    )
    await api.ok("POST", "/v1/networks", api.admin, json={"name": "prod", "cidr": "10.9.0.0/24"})


async def _instance(api: Api, name: str, flavor: str, image: str | None) -> httpx.Response:
    operator = await api.token("operator")
    body = {"name": name, "flavor": flavor, "network": "prod", "image": image}
    return await api.call("POST", "/v1/instances", operator, json=body)


async def _loaded(api: Api, name: str) -> Instance:
    """The instance as the loops load it: a query in a session of its own."""
    async with api.controller.db.reading() as session:
        instance = await session.scalar(select(Instance).where(Instance.name == name))
    assert instance is not None
    return instance


async def test_an_instance_made_from_an_image(api: Api, tmp_path: Path) -> None:
    await _instance_setup(api, disk_gb=1)
    image = await created(api, "debian", qcow2(tmp_path / "disk.qcow2", "16M"))
    response = await _instance(api, "vm-1", "m1", "debian")
    assert response.status_code == 201, response.text
    assert response.json()["image"] == "debian"
    assert (await api.ok("GET", "/v1/instances/vm-1", api.admin))["image"] == "debian"
    assert [i["image"] for i in await api.ok("GET", "/v1/instances", api.admin)] == ["debian"]
    (event,) = await api.events(kind="instance.created")
    assert event["data"]["image"] == "debian"

    spec = guest_spec(await _loaded(api, "vm-1"))
    assert spec.disk is not None
    # The flavor has no disk: the image's virtual size, in the whole GiB the scheduler claims.
    assert spec.disk.size_bytes == GIB
    assert (await api.ok("GET", "/v1/instances/vm-1", api.admin))["disk_gb"] == 1
    assert spec.disk.image.model_dump() == {
        key: image[key]
        for key in ("id", "name", "format", "size_bytes", "virtual_size_bytes", "sha256")
    }

    sized = await _instance(api, "vm-2", "small", "debian")
    assert sized.status_code == 201, sized.text
    spec = guest_spec(await _loaded(api, "vm-2"))
    assert spec.disk is not None and spec.disk.size_bytes == GIB  # the flavor's disk

    bare = await _instance(api, "vm-3", "m1", None)
    assert bare.status_code == 201 and bare.json()["image"] is None
    assert guest_spec(await _loaded(api, "vm-3")).disk is None

    unknown = await _instance(api, "vm-4", "m1", "nope")
    assert unknown.status_code == 404 and unknown.json()["message"] == "no image named 'nope'"


async def test_a_flavor_disk_smaller_than_the_image_is_refused(api: Api, tmp_path: Path) -> None:
    await _instance_setup(api, disk_gb=1)
    await created(api, "large", qcow2(tmp_path / "disk.qcow2", "2G"))
    response = await _instance(api, "vm-1", "small", "large")
    assert response.status_code == 422
    assert response.json()["message"] == (
        "flavor small's disk (1 GiB) is smaller than image large (2.0 GiB virtual)"
    )
    assert await api.ok("GET", "/v1/instances", api.admin) == []


async def test_delete_is_refused_while_an_instance_uses_the_image(api: Api, tmp_path: Path) -> None:
    await _instance_setup(api)
    image = await created(api, "debian", qcow2(tmp_path / "disk.qcow2"))
    assert (await _instance(api, "vm-1", "m1", "debian")).status_code == 201
    operator = await api.token("operator")

    refused = await api.call("DELETE", "/v1/images/debian", operator)
    assert refused.status_code == 409
    assert refused.json()["message"] == (
        "image 'debian' is in use by instance(s) vm-1: delete them first"
    )
    assert refused.json()["details"] == {"instances": ["vm-1"]}
    assert await stored(api) == ([image["id"]], 1)

    await api.ok("DELETE", "/v1/instances/vm-1", operator)

    async def gone() -> bool:
        return (await api.call("GET", "/v1/instances/vm-1", api.admin)).status_code == 404

    await api.eventually(gone)
    deleted = await api.call("DELETE", "/v1/images/debian", operator)
    assert deleted.status_code == 204, deleted.text
    assert await stored(api) == ([], 0)
    assert await api.kinds(kind="image") == ["image.created", "image.deleted"]
    assert (await api.events(kind="image.deleted"))[0]["actor"] == "operator-bot"
    # The deleted instance's record stays, letting go of the image.
    async with api.controller.db.reading() as session:
        row = await session.scalar(select(Instance).where(Instance.name == "vm-1"))
    assert row is not None and row.image_id is None and row.image == "debian"
    missing = await api.call("DELETE", "/v1/images/debian", operator)
    assert missing.status_code == 404


async def test_agents_download_the_file(api: Api, tmp_path: Path) -> None:
    data = qcow2(tmp_path / "disk.qcow2")
    image = await created(api, "debian", data)
    agent = await api.token("agent")
    url = f"/v1/agent/images/{image['id']}/file"
    response = await api.call("GET", url, agent)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-ferry-image-sha256"] == hashlib.sha256(data).hexdigest()
    for role in ("reader", "operator", "admin"):
        refused = await api.call("GET", url, await api.token(role))
        assert refused.status_code == 403, role
        assert refused.json()["error"] == "forbidden"
    assert (await api.call("GET", url, None)).status_code == 401
    unknown = await api.call("GET", "/v1/agent/images/nope/file", agent)
    assert unknown.status_code == 404
    # The agent role reads no catalog: it only fetches files.
    assert (await api.call("GET", "/v1/images", agent)).status_code == 403
