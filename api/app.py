"""The FastAPI application: routers under /api/v1 and errors that name their field."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse

from api.dashboard import install_dashboard
from api.deps import get_db
from api.docs import install_offline_docs
from api.observability import install_observability
from api.routers import candidates, compare, events, export, importance, jobs, ladder, meta
from nas_service.jobs import JobConflict, JobError, JobNotFound

API_PREFIX = "/api/v1"


def _field_error(request: Request, exc: JobError) -> JSONResponse:
    code = (
        status.HTTP_409_CONFLICT
        if isinstance(exc, JobConflict)
        else status.HTTP_422_UNPROCESSABLE_CONTENT
    )
    where = "body" if request.method in ("POST", "PUT", "PATCH") else "query"
    detail = [{"loc": [where, *exc.field.split(".")], "msg": exc.message, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=code)


def _readable(error: dict[str, Any]) -> dict[str, Any]:
    """One of pydantic's errors as a person reads it: its `loc` names the field, so the words
    lose pydantic's `Value error, ` prefix; a validator's exception in `ctx` becomes its text."""
    item = {**error, "msg": str(error.get("msg", "")).removeprefix("Value error, ")}
    ctx = item.get("ctx")
    if isinstance(ctx, dict) and isinstance(ctx.get("error"), BaseException):
        item["ctx"] = {**ctx, "error": str(ctx["error"])}
    return item


def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 (`loc`, `msg`, `type`, `input`), with readable messages. The job
    configuration words its own (an unknown key names the closest field): this catches the
    rest, e.g. query parameters and bodies other than a job's."""
    detail = [_readable(error) for error in exc.errors()]
    return JSONResponse(
        {"detail": jsonable_encoder(detail)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


def _not_found(_: Request, exc: JobNotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


def create_app() -> FastAPI:
    app = FastAPI(title="nas-service", version="0.1.0", docs_url=None, redoc_url=None)
    routers = (jobs, ladder, candidates, export, events, meta, importance, compare)
    for router in (module.router for module in routers):
        app.include_router(router, prefix=API_PREFIX)
    install_observability(app, get_db)
    install_offline_docs(app)  # Swagger UI from an installed package: works offline
    install_dashboard(app)
    # JSON compresses about 2.7x at level 1 in a tenth of level 9's time (4.9 MB of Pareto
    # points: 71 vs 696 ms for 2.95x). SSE streams are never gzipped.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=1)
    app.add_exception_handler(JobError, _field_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(JobNotFound, _not_found)
    return app
