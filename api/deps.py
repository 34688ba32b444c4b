"""Typed dependencies for the routers."""

from __future__ import annotations

from functools import cache
from typing import Annotated

from fastapi import Depends, Path, Request

from api.auth import Caller, WriteCaller, authorize_job_write
from nas_service import jobs
from nas_service.db import Database
from nas_service.settings import Settings, get_settings


@cache
def _database(url: str) -> Database:
    return Database(url)


def get_db(settings: Annotated[Settings, Depends(get_settings)]) -> Database:
    return _database(settings.resolved_database_url)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]

# Row ids are 32-bit integers on PostgreSQL: anything larger is a 422, never a database error.
MAX_ID = 2**31 - 1
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="Job id.")]
CandidateId = Annotated[int, Path(ge=1, le=MAX_ID, description="Candidate id.")]


def require_job_write(
    request: Request, job_id: JobId, db: DbDep, caller: WriteCaller
) -> Caller | None:
    """Who changes job `job_id`: its owner or an admin (403 otherwise, 404 for an unknown job).

    None when auth is off: then anyone may.
    """
    if caller is not None and not caller.admin:
        authorize_job_write(request, caller, job_id, jobs.get(db, job_id).owner)
    return caller


JobWriter = Annotated[Caller | None, Depends(require_job_write)]


def require_candidate_write(
    request: Request, candidate_id: CandidateId, db: DbDep, caller: WriteCaller
) -> Caller | None:
    """Who changes candidate `candidate_id` (its note): its job's owner or an admin."""
    if caller is not None and not caller.admin:
        job_id = jobs.candidate_job(db, candidate_id)
        authorize_job_write(request, caller, job_id, jobs.get(db, job_id).owner)
    return caller


CandidateWriter = Annotated[Caller | None, Depends(require_candidate_write)]
