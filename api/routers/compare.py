"""Jobs side by side: each one's front normalised by its own baseline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ReadOwner
from api.deps import MAX_ID, DbDep
from api.schemas import NOT_FOUND, ComparePublic
from nas_service import queries
from nas_service.jobs import JobError
from nas_service.queries.compare import MAX_JOBS

router = APIRouter(tags=["analysis"], responses=NOT_FOUND)


def _job_ids(text: str) -> list[int]:
    """The ids of a comma-separated list: 1 to MAX_JOBS distinct job ids."""
    parts = [part.strip() for part in text.split(",")]
    if parts == [""]:
        raise JobError("jobs", "give at least one job id, e.g. jobs=1,2")
    ids = []
    for part in parts:
        if not part.isascii() or not part.isdigit() or not 1 <= int(part) <= MAX_ID:
            raise JobError("jobs", f"{part!r} is not a job id (a positive integer)")
        ids.append(int(part))
    if len(ids) > MAX_JOBS:
        raise JobError("jobs", f"at most {MAX_JOBS} jobs at a time (got {len(ids)})")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise JobError("jobs", f"job {repeated[0]} is named twice")
    return ids


@router.get("/compare", response_model=ComparePublic)
def compare(
    db: DbDep,
    _: ReadOwner,
    jobs: Annotated[
        str,
        Query(
            max_length=1000,
            description=f"Comma-separated ids of 1 to {MAX_JOBS} jobs, e.g. `1,2,3`.",
        ),
    ],
) -> ComparePublic:
    """Each job's Pareto front with perplexity over its own baseline's (the step-time ratio
    is relative to the baseline already), its device kind, trial budget and baseline: jobs
    on different devices or budgets on one scale."""
    return ComparePublic(jobs=queries.compare_jobs(db, _job_ids(jobs)))
