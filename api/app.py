"""The FastAPI application: routers under /api/v1 and errors that name their field."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from api.routers import candidates, jobs, meta
from nas_service.jobs import JobConflict, JobError, JobNotFound

API_PREFIX = "/api/v1"


def _field_error(request: Request, exc: JobError) -> JSONResponse:
    code = (
        status.HTTP_409_CONFLICT
        if isinstance(exc, JobConflict)
        else status.HTTP_422_UNPROCESSABLE_CONTENT
    )
    where = "body" if request.method in ("POST", "PUT", "PATCH") else "query"
    detail = [{"loc": [where, *exc.field.split(".")], "msg": str(exc), "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=code)


def _not_found(_: Request, exc: JobNotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


def create_app() -> FastAPI:
    app = FastAPI(title="nas-service", version="0.1.0")
    for router in (jobs.router, candidates.router, meta.router):
        app.include_router(router, prefix=API_PREFIX)
    app.add_exception_handler(JobError, _field_error)
    app.add_exception_handler(JobNotFound, _not_found)
    return app
