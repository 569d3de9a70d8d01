"""Every error leaves the API as JSON {"error": code, "message": text} with a fitting 4xx, and
`details` when the error carries specifics (e.g. a refused drain's per-instance reasons)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ferry.domain.errors import (
    Conflict,
    FerryError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger(__name__)

STATUS: list[tuple[type[FerryError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthenticated, 401),
    (Forbidden, 403),
]


def _body(
    code: str,
    message: str,
    status: int,
    details: dict[str, Any] | None = None,
    **headers: str,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _ferry_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FerryError)
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return _body(exc.code, exc.message, status, exc.details, **headers)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        "the request body is not valid JSON"
        if err["type"] == "json_invalid"
        else f"{_location(tuple(err['loc']))}: {err['msg']}"
        for err in exc.errors()
    ]
    return _body("invalid_input", "; ".join(problems) or "invalid request", 422)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _body(code, str(exc.detail), exc.status_code)


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return _body("internal", "internal error; the controller log has the details", 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FerryError, _ferry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
