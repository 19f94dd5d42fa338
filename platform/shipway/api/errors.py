"""Errors to HTTP responses, in one table. Users get a message, never a trace.

Every error answer has the same shape, ``{"detail": "<one sentence>"}``; a 422 adds
``errors``, the fields that do not fit the document (empty when a rule across fields
refused the request). ``responses`` declares, per route, which of these a route can
answer, so the OpenAPI document lists every status a client may see.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from shipway.api.schemas import (
    ID_PATTERN,
    NAME_PATTERN,
    STICKY_HEADER_PATTERN,
    URL_PATTERN,
    ErrorOut,
    ValidationErrorOut,
)
from shipway.errors import (
    BuildFailed,
    Conflict,
    Gone,
    InvalidInput,
    NotFound,
    ShipwayError,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS: dict[type[ShipwayError], int] = {
    InvalidInput: 422,
    Gone: 410,
    NotFound: 404,
    Conflict: 409,
    BuildFailed: 409,
    Unavailable: 503,
}

# What each status means in this API; the descriptions in the OpenAPI document.
MEANING: dict[int, str] = {
    400: "The body could not be read (not UTF-8 JSON, or broken multipart)",
    401: "No bearer token, or an unknown one",
    403: "The token's role may not do this",
    404: "A named model, version, build, deployment, variant or rollout does not exist",
    409: "The request clashes with the current state (the message says which)",
    410: "MLflow no longer holds what this needs (a deleted registered model, version or "
    "run); the message names it",
    422: "The request does not fit the document (errors names the fields), or breaks a "
    "rule across fields that the document cannot state",
    503: "A dependency (MLflow, the build queue, the gateway) is not reachable; may pass",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of one route for its OpenAPI entry; 401 always (every route
    needs a token)."""
    return {
        code: {
            "model": ValidationErrorOut if code == 422 else ErrorOut,
            "description": MEANING[code],
        }
        for code in sorted({401, *codes})
    }


def status_for(exc: ShipwayError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


# What the document's patterns mean, for messages a person reads.
PATTERNS = {
    NAME_PATTERN: "a name of lower-case letters, digits and '-', at most 63 characters, "
    "starting and ending with a letter or digit",
    ID_PATTERN: "an id of at most 32 letters, digits, '-' or '_'",
    STICKY_HEADER_PATTERN: "an x- header",
    URL_PATTERN: "an http(s) URL",
}


def _sentence(error: dict[str, Any]) -> str:
    """One field's error in the API's voice: ``body.weight must be less than or equal
    to 100, got 101``."""
    where = ".".join(str(p) for p in error["loc"])
    msg, kind = error["msg"], error["type"]
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        msg = f"must be {PATTERNS.get(pattern, f'like {pattern!r}')}"
    elif kind == "extra_forbidden":
        msg = "is not a field of this request"
    elif kind == "missing":
        msg = "is required"
    elif msg.startswith("Input should be "):
        msg = "must be " + msg.removeprefix("Input should be ")
    else:
        return f"{where}: {msg}"
    value = error.get("input")
    if kind != "missing" and isinstance(value, int | float | str) and len(repr(value)) <= 40:
        msg += f", got {value!r}"
    return f"{where} {msg}"


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and what: pydantic's ``input`` may hold bytes or the whole body.
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e["loc"]],
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in exc.errors()
    ]


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document gives the path's template."""
    methods = {
        method.upper()
        for template, operations in app.openapi()["paths"].items()
        if compile_path(template)[0].match(path)
        for method in operations
    }
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ShipwayError)
    async def _domain(_: Request, exc: ShipwayError) -> JSONResponse:
        status = status_for(exc)
        body: dict[str, Any] = {"detail": str(exc)}
        if status == 422:
            body["errors"] = []
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(_sentence(e) for e in exc.errors())
        return JSONResponse({"detail": detail, "errors": _field_errors(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Any:
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only,
            # and GET and POST of one path are two routes (RFC 9110: Allow lists all).
            allowed = _allowed_methods(app, request.url.path)
            exc = HTTPException(405, exc.detail, headers={"Allow": ", ".join(allowed)})
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the API log"}, status_code=500)
