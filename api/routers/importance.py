"""Which block features explain a job's perplexity and step time."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import ReadOwner
from api.deps import DbDep, JobId
from api.schemas import NOT_FOUND, ImportancePublic
from nas_service import queries

router = APIRouter(prefix="/jobs", tags=["analysis"], responses=NOT_FOUND)


@router.get("/{job_id}/importance", response_model=ImportancePublic)
def importance(job_id: JobId, db: DbDep, _: ReadOwner) -> ImportancePublic:
    """Each feature's share of the variance of perplexity and of step time over the job's
    completed candidates, most important first; `features` is empty, with a `message`, while
    the job has too few. Computed once per completed candidate (then cached)."""
    return ImportancePublic.model_validate(queries.job_importance(db, job_id))
