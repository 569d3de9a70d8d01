"""Every error leaves the API as JSON {"error": code, "message": text} with a fitting 4xx, and
`details` when the error carries specifics (e.g. a refused drain's per-instance reasons)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from ferry.domain.errors import (
    Conflict,
    FerryError,
    Forbidden,
    InvalidInput,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS: list[tuple[type[FerryError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (TooLarge, 413),
    (Unavailable, 503),
]


def _body(
    code: str,
    message: str,
    status: int,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _ferry_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FerryError)
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _body(exc.code, exc.message, status, exc.details, headers)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    return ".".join(parts) or str(loc[0] if loc else "request")


NOT_JSON = "the request body is not valid JSON"


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        NOT_JSON
        if err["type"] == "json_invalid"
        else f"{_location(tuple(err['loc']))}: {err['msg']}"
        for err in exc.errors()
    ]
    return _body("invalid_input", "; ".join(problems) or "invalid request", 422)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request, refused: HTTPException) -> str:
    """What a 405 lists in `Allow`: every method the request's path takes. Starlette names the
    methods of the first route of the path only, and each method of a path is a route."""
    scope = request.scope
    if refused.headers and scope.get("root_path", "") != scope.get("app_root_path", ""):
        return refused.headers.get("Allow", "")  # refused by a mounted app (the dashboard's)
    path = {"type": "http", "path": request.url.path, "root_path": ""}
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**path, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI answers a JSON body that it cannot even decode (bytes that are not UTF-8,
        # nesting deeper than the parser goes) with a bare 400, where a syntax error gets a
        # validation error: both are the same mistake to a client, so they get the same answer.
        return _body("invalid_input", NOT_JSON, 422)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request, exc)
    return _body(code, str(exc.detail), exc.status_code, headers=headers)


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    return _body("internal", "internal error; the controller log has the details", 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FerryError, _ferry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
