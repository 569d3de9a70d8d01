"""The image catalog: operators upload (the file as the request body) and delete images,
readers list them, agents download their files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from ferry.api import schemas
from ferry.api.deps import Agent, Ctl, Operator, Reader
from ferry.api.routers.hosts import ERRORS
from ferry.domain.errors import InvalidInput

router = APIRouter(prefix="/v1", tags=["images"])

SHA256_HEADER = "X-Ferry-Image-Sha256"
ImageName = Annotated[str, Query(max_length=63, description="a-z, 0-9 and '-'")]

UPLOAD: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the image file, as it is",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **{code: {"model": schemas.ErrorOut} for code in (413, 503)},
}
FILE: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "description": "the image file",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            SHA256_HEADER: {
                "description": "SHA-256 of the file, as the controller computed it at upload",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
            "Content-Length": {"schema": {"type": "integer"}},
        },
    },
}


PARAMETERS = {"name", "format"}


def _length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidInput(f"invalid Content-Length {value!r}")
    return int(value)


@router.post(
    "/images",
    response_model=schemas.ImageOut,
    status_code=201,
    responses=UPLOAD_ERRORS,
    openapi_extra=UPLOAD,
)
async def create_image(
    ctl: Ctl,
    who: Operator,
    request: Request,
    name: ImageName,
    fmt: Annotated[
        Literal["qcow2", "raw"], Query(alias="format", description="what the file is")
    ] = "qcow2",
) -> schemas.ImageOut:
    """Upload an image: the raw file is the request body (application/octet-stream). Its size,
    virtual size and SHA-256 are measured here; a file that is not of `format`, or a qcow2 with
    a backing file, is refused (422), as is one over the size limit (413)."""
    unknown = sorted(set(request.query_params) - PARAMETERS)
    if unknown:
        raise InvalidInput(
            f"unknown parameter(s) {', '.join(unknown)}: only name and format are given; the"
            " controller measures size, virtual size and SHA-256 itself"
        )
    try:
        image = await ctl.images.create(
            name, fmt, request.stream(), who.name, length=_length(request)
        )
    except ClientDisconnect:
        raise InvalidInput("the upload ended before the file did: nothing was stored") from None
    return schemas.ImageOut.model_validate(image)


@router.get("/images", response_model=list[schemas.ImageOut], responses=ERRORS)
async def list_images(ctl: Ctl, _who: Reader) -> list[schemas.ImageOut]:
    return [schemas.ImageOut.model_validate(i) for i in await ctl.images.all()]


@router.get("/images/{name}", response_model=schemas.ImageOut, responses=ERRORS)
async def show_image(ctl: Ctl, _who: Reader, name: str) -> schemas.ImageOut:
    return schemas.ImageOut.model_validate(await ctl.images.get(name))


@router.delete("/images/{name}", status_code=204, responses=ERRORS)
async def delete_image(ctl: Ctl, who: Operator, name: str) -> Response:
    """Delete an image that no instance uses (409 names the instances that do)."""
    await ctl.images.delete(name, who.name)
    return Response(status_code=204)


@router.get(
    "/agent/images/{image_id}/file",
    response_class=FileResponse,
    responses=FILE,
    tags=["agent"],
)
async def image_file(ctl: Ctl, _who: Agent, image_id: str) -> FileResponse:
    """An image's file, for an agent (agent-role token): Content-Length, and the SHA-256 the
    controller computed in `X-Ferry-Image-Sha256` for the agent to check."""
    image, path, stat = await ctl.images.file(image_id)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        stat_result=stat,
        headers={SHA256_HEADER: image.sha256},
        content_disposition_type="attachment",
        filename=f"{image.name}.{image.format}",
    )
