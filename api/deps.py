"""Typed dependencies for the routers."""

from __future__ import annotations

from functools import cache
from typing import Annotated

from fastapi import Depends, Path

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
