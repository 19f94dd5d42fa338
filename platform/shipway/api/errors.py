"""Domain errors to HTTP responses, in one table. Users get a message, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shipway.errors import (
    BuildFailed,
    Conflict,
    InvalidInput,
    NotFound,
    ShipwayError,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS: dict[type[ShipwayError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    BuildFailed: 409,
    Unavailable: 503,
}


def status_for(exc: ShipwayError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def install(app: FastAPI) -> None:
    @app.exception_handler(ShipwayError)
    async def _domain(_: Request, exc: ShipwayError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_for(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the API log"}, status_code=500)
